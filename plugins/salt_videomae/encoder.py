"""The VideoMAE encoder in plain torch: tubelet embedding, 1-D sinusoid positions, pre-norm blocks.

Parameter names follow the original VideoMAE/VideoMAEv2 code (``patch_embed.proj``,
``blocks.N.attn.qkv`` with separate ``q_bias``/``v_bias``, ``norm``); checkpoint.py maps the
Hugging Face layout onto them.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": "none",  # exact (erf) GELU, what VideoMAE and HF's "gelu" use
    "gelu_new": "tanh",
    "gelu_pytorch_tanh": "tanh",
}


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


@attrs.frozen
class VideoMAEArch:
    """Everything that fixes the encoder's shapes and math."""

    num_frames: int
    image_size: tuple[int, int] = attrs.field(converter=lambda v: _pair(v, "image_size"))
    patch_size: tuple[int, int] = attrs.field(converter=lambda v: _pair(v, "patch_size"))
    tubelet_size: int
    in_chans: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    qkv_bias: bool = True  # biases on q and v; k never has one
    layer_norm_eps: float = 1e-6
    final_norm: bool = True  # HF: not use_mean_pooling; original: the encoder has `norm.*`
    layer_scale: bool = False  # per-channel gamma_1/gamma_2 (original init_values > 0)
    learned_pos: bool = False  # a stored pos_embed instead of the fixed sinusoid table
    hidden_act: str = "gelu"

    def __attrs_post_init__(self):
        t, (h, w), (ph, pw) = self.num_frames, self.image_size, self.patch_size
        if t % self.tubelet_size or h % ph or w % pw:
            raise ValueError(
                f"a {t}x{h}x{w} clip does not tile into {self.tubelet_size}x{ph}x{pw} tubelets"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"hidden size {self.embed_dim} is not divisible by {self.num_heads} attention heads"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unsupported hidden_act {self.hidden_act!r}; supported: {', '.join(ACTIVATIONS)}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W')."""
        return (
            self.num_frames // self.tubelet_size,
            self.image_size[0] // self.patch_size[0],
            self.image_size[1] // self.patch_size[1],
        )

    @property
    def num_tokens(self) -> int:
        """Tokens per clip, T' * H' * W'."""
        t, h, w = self.grid
        return t * h * w


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D table ``[num_positions, dim]`` over the flattened (t, h, w) tokens.

    Channel ``j`` has frequency ``10000 ** (-2 * (j // 2) / dim)``: sine on even channels,
    cosine on odd ones (the "Attention is all you need" table, not salt's 3-D sin-cos).
    """
    positions = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2.0 * torch.div(torch.arange(dim), 2, rounding_mode="floor").double() / dim
    angles = positions / torch.pow(10000.0, exponent)[None]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv weight; q and v may have biases, k never."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), as VideoMAE
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, approximate: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Block(nn.Module):
    """Pre-norm transformer block, optionally with VideoMAE's layer scale (gamma_1, gamma_2)."""

    def __init__(self, arch: VideoMAEArch):
        super().__init__()
        dim = arch.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=arch.layer_norm_eps)
        self.attn = Attention(dim, arch.num_heads, arch.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=arch.layer_norm_eps)
        self.mlp = Mlp(dim, arch.mlp_dim, ACTIVATIONS[arch.hidden_act])
        if arch.layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(dim))
            self.gamma_2 = nn.Parameter(torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``tubelet x patch x patch`` Conv3d."""

    def __init__(self, arch: VideoMAEArch):
        super().__init__()
        kernel = (arch.tubelet_size, *arch.patch_size)
        self.proj = nn.Conv3d(arch.in_chans, arch.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Video ``[B, C, T, H, W]`` -> tokens ``[B, T'*H'*W', D]`` in (t, h, w) order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEEncoder(nn.Module):
    """The VideoMAE encoder over a whole clip: every token, no masking, no CLS token."""

    def __init__(self, arch: VideoMAEArch):
        super().__init__()
        self.arch = arch
        self.embed_dim = arch.embed_dim
        self.grid = arch.grid
        self.num_tokens = arch.num_tokens
        self.patch_embed = PatchEmbed(arch)
        if arch.learned_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, arch.num_tokens, arch.embed_dim))
        else:
            self.register_buffer(
                "pos_embed", torch.zeros(1, arch.num_tokens, arch.embed_dim), persistent=False
            )
            self.fill_position_table()
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        if arch.final_norm:
            self.norm = nn.LayerNorm(arch.embed_dim, eps=arch.layer_norm_eps)
        else:
            self.norm = None

    @torch.no_grad()
    def fill_position_table(self) -> None:
        """(Re)write the fixed sinusoid table, e.g. after ``to_empty()``; no-op when learned."""
        if not self.arch.learned_pos and self.pos_embed.device.type != "meta":
            table = sinusoid_table(self.num_tokens, self.embed_dim)[None]
            self.pos_embed.copy_(table.to(self.pos_embed.dtype))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, C, T, H, W]`` -> last hidden states ``[B, N, D]``."""
        a = self.arch
        expected = (a.in_chans, a.num_frames, *a.image_size)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"VideoMAE expects clips [B, C, T, H, W] with (C, T, H, W) = {expected}, "
                f"got {tuple(video.shape)}"
            )
        x = self.patch_embed(video.to(self.patch_embed.proj.weight.dtype))
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x if self.norm is None else self.norm(x)

    def forward_flops(self) -> float:
        """Analytic forward FLOPs for one clip (2 per multiply-add; norms and softmax ignored)."""
        a, n, d = self.arch, self.num_tokens, self.embed_dim
        patch_dim = a.in_chans * a.tubelet_size * a.patch_size[0] * a.patch_size[1]
        embed = 2.0 * n * patch_dim * d
        linear = 2.0 * (4 * d * d + 2 * d * a.mlp_dim)  # qkv + proj + fc1 + fc2, per token
        attention = 4.0 * n * d  # QK^T and AV, per token
        return embed + a.depth * n * (linear + attention)


def default_num_heads(embed_dim: int) -> int:
    """Heads of the released VideoMAE sizes; head width 64 for any other width."""
    # ViT-H (1280) and ViT-g (1408) use 16 heads, not width / 64.
    known = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
    if embed_dim in known:
        return known[embed_dim]
    if embed_dim % 64:
        raise ValueError(
            f"cannot infer the attention heads of a width-{embed_dim} VideoMAE checkpoint "
            f"(not a released size, not a multiple of 64); give it a config.json"
        )
    return embed_dim // 64


__all__ = ["VideoMAEArch", "VideoMAEEncoder", "sinusoid_table", "default_num_heads"]
