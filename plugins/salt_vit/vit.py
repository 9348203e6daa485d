"""Video ViT: tubelet embedding, 3-D positions, pre-norm blocks run only on kept tokens."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from salt.masking import gather_tokens
from salt_vit.block import Block
from salt_vit.pos_embed import resample_3d, sincos_3d


class TubeletEmbed(nn.Module):
    """Non-overlapping ``tubelet x patch x patch`` Conv3d embedding."""

    def __init__(self, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv3d(
            in_chans,
            embed_dim,
            kernel_size=(tubelet_size, patch_size, patch_size),
            stride=(tubelet_size, patch_size, patch_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Video ``[B, C, T, H, W]`` -> tokens ``[B, T'*H'*W', D]`` in (t, h, w) order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoViT(nn.Module):
    """A video Vision Transformer without a CLS token.

    ``forward(x, keep)`` embeds the whole clip but runs the transformer blocks only on the
    kept (visible) tokens, which is where SALT saves its compute.
    """

    def __init__(
        self,
        num_frames: int = 16,
        image_size: int = 224,
        patch_size: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        pos_embed: str = "sincos",
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if num_frames % tubelet_size or image_size % patch_size:
            raise ValueError(
                f"a {num_frames}x{image_size} clip does not tile into {tubelet_size}x"
                f"{patch_size}x{patch_size} tubelets"
            )
        self.num_frames = num_frames
        self.image_size = image_size
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.in_chans = in_chans
        self.embed_dim = self.num_features = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.grid = (num_frames // tubelet_size, image_size // patch_size, image_size // patch_size)
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.grad_checkpointing = grad_checkpointing
        # Sin-cos positions of other grids, by (grid, device); a plain dict, not state.
        self._grid_pos_embed: dict[tuple, torch.Tensor] = {}

        self.patch_embed = TubeletEmbed(patch_size, tubelet_size, in_chans, embed_dim)
        if pos_embed == "sincos":
            self.register_buffer(
                "pos_embed", sincos_3d(embed_dim, self.grid)[None], persistent=False
            )
        elif pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        rates = np.linspace(0.0, drop_path, depth).tolist()  # plain numbers, also on "meta"
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=rate,
                norm_layer=layer_norm,
            )
            for rate in rates
        )
        self.norm = layer_norm(embed_dim)
        self.apply(init_weights)
        rescale_blocks(self.blocks)

    def embed(self, x: torch.Tensor, dynamic_size: bool = False) -> torch.Tensor:
        """Video ``[B, C, T, H, W]`` -> position-embedded tokens ``[B, N, D]``.

        A clip of the training geometry uses the stored positions as they are. With
        ``dynamic_size`` any clip that tiles into tubelets works: its grid comes from the
        clip, with sin-cos positions computed for that grid or the learned table resampled.
        """
        tokens = self.patch_embed(x)
        grid = self.grid_of(x)
        if grid == self.grid:
            return tokens + self.pos_embed.to(tokens.dtype)
        if not dynamic_size:
            raise ValueError(
                f"clip of shape {tuple(x.shape)} gives {tokens.shape[1]} tokens, expected "
                f"{self.num_tokens} for {self.num_frames} frames at {self.image_size}px; "
                f"pass dynamic_size=True (as VideoEncoder does) to embed other geometries"
            )
        t, h, w = x.shape[-3:]
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size or 0 in grid:
            raise ValueError(
                f"clip of shape {tuple(x.shape)} does not tile into {self.tubelet_size}x"
                f"{self.patch_size}x{self.patch_size} tubelets; use a frame count that is a "
                f"multiple of {self.tubelet_size} and sides that are multiples of {self.patch_size}"
            )
        return tokens + self.pos_embed_for(grid, tokens.device).to(tokens.dtype)

    def grid_of(self, x: torch.Tensor) -> tuple[int, int, int]:
        """Token grid (T', H', W') the tubelet convolution makes of a clip ``[B, C, T, H, W]``."""
        t, h, w = x.shape[-3:]
        return (t // self.tubelet_size, h // self.patch_size, w // self.patch_size)

    def pos_embed_for(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """Positions ``[1, T'*H'*W', D]`` for another grid: sin-cos computed for it (exact),
        or the learned table resampled trilinearly."""
        if isinstance(self.pos_embed, nn.Parameter):
            return resample_3d(self.pos_embed, self.grid, grid)
        key = (grid, str(device))
        if key not in self._grid_pos_embed:
            # Made outside inference mode so a table first built there also works in training.
            with torch.inference_mode(False), torch.no_grad():
                self._grid_pos_embed[key] = sincos_3d(self.embed_dim, grid)[None].to(device)
        return self._grid_pos_embed[key]

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, dynamic_size: bool = False
    ) -> torch.Tensor:
        """Video ``[B, C, T, H, W]`` -> normed tokens ``[B, K, D]`` at ``keep [B, K]`` (all if None)."""
        return self.encode(self.embed(x, dynamic_size), keep)

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded tokens ``[B, N, D]`` -> normed tokens ``[B, K, D]`` after the blocks."""
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        for block in self.blocks:
            tokens = self._run_block(block, tokens)
        return self.norm(tokens)

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        norm: bool = False,
        dynamic_size: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Outputs ``[B, N, D]`` of the last ``n`` blocks, or of the blocks at the given
        indices (negative counts from the end), in block order; ``norm`` applies the final
        norm to each (the last block's output, normed, is ``forward``'s)."""
        wanted = self._block_indices(n)
        tokens = self.embed(x, dynamic_size)
        outputs = []
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = self._run_block(block, tokens)
            if i in wanted:
                outputs.append(self.norm(tokens) if norm else tokens)
        return tuple(outputs)

    def _block_indices(self, n: int | Sequence[int]) -> set[int]:
        depth = len(self.blocks)
        if isinstance(n, int):
            if not 1 <= n <= depth:
                raise ValueError(f"n={n} layers asked of a {depth}-block encoder; use 1..{depth}")
            return set(range(depth - n, depth))
        indices = [int(i) for i in n]
        bad = [i for i in indices if not -depth <= i < depth]
        if not indices or bad:
            raise ValueError(
                f"block indices {list(n)} are not in [{-depth}, {depth - 1}] for a "
                f"{depth}-block encoder"
            )
        return {i % depth for i in indices}

    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, tokens, use_reentrant=False)
        return block(tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.grad_checkpointing = enable

    def flops_per_token(self, tokens: int) -> float:
        """Forward FLOPs per token with ``tokens`` in the sequence (attention counted)."""
        return block_flops_per_token(self.embed_dim, self.depth, self.mlp_ratio, tokens)

    def forward_flops(self, kept_tokens: int) -> float:
        """Forward FLOPs for one clip whose blocks see ``kept_tokens`` tokens."""
        patch_dim = self.in_chans * self.tubelet_size * self.patch_size**2
        embed = 2.0 * self.num_tokens * patch_dim * self.embed_dim
        return embed + kept_tokens * self.flops_per_token(kept_tokens)


def block_flops_per_token(dim: int, depth: int, mlp_ratio: float, tokens: int) -> float:
    """Forward FLOPs per token of ``depth`` pre-norm blocks: linears plus QK^T and AV."""
    linear = 2.0 * (4 + 2 * mlp_ratio) * dim * dim
    attention = 4.0 * tokens * dim
    return depth * (linear + attention)


def layer_norm(dim: int, **kwargs) -> nn.LayerNorm:
    """LayerNorm with the ViT epsilon (device/dtype pass through kwargs)."""
    return nn.LayerNorm(dim, eps=1e-6, **kwargs)


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv3d):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def rescale_blocks(blocks: nn.ModuleList) -> None:
    # Residual-branch outputs shrink with depth (as in V-JEPA/BEiT) so deep stacks start stable.
    for i, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_((2.0 * i) ** 0.5)
        block.mlp.fc2.weight.data.div_((2.0 * i) ** 0.5)


@attrs.frozen
class Variant:
    """One student size, declared once: its name, shape and short names."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    aliases: tuple[str, ...] = ()
    mlp_ratio: float = 4.0

    def describe(self) -> str:
        """One line for `salt plugins`."""
        return f"video ViT, width {self.embed_dim}, depth {self.depth}, {self.num_heads} heads"

    def build(self, **kwargs) -> VideoViT:
        """The model, with any VideoViT keyword overrides."""
        shape = dict(embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads)
        return VideoViT(**{**shape, "mlp_ratio": self.mlp_ratio, **kwargs})


VARIANTS = {
    v.name: v
    for v in (
        Variant("vit_tiny", embed_dim=192, depth=12, num_heads=3, aliases=("vit_t",)),
        Variant("vit_small", embed_dim=384, depth=12, num_heads=6, aliases=("vit_s",)),
        Variant("vit_base", embed_dim=768, depth=12, num_heads=12, aliases=("vit_b",)),
        Variant("vit_large", embed_dim=1024, depth=24, num_heads=16, aliases=("vit_l",)),
        Variant("vit_huge", embed_dim=1280, depth=32, num_heads=16, aliases=("vit_h",)),
        Variant(
            "vit_giant",
            embed_dim=1408,
            depth=40,
            num_heads=16,
            aliases=("vit_g",),
            mlp_ratio=48 / 11,
        ),
    )
}


def create_vit(size: str, **kwargs) -> VideoViT:
    """Build a registered ViT size with any VideoViT keyword overrides."""
    return VARIANTS[size].build(**kwargs)


__all__ = ["VARIANTS", "Variant", "VideoViT", "create_vit", "gather_tokens"]
