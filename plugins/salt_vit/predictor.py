"""Transformer predictor: context tokens + mask tokens at target positions -> teacher latents."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from salt.masking import gather_tokens
from salt_vit.block import Block
from salt_vit.pos_embed import sincos_3d
from salt_vit.vit import block_flops_per_token, init_weights, layer_norm, rescale_blocks


class TransformerPredictor(nn.Module):
    """Runs its blocks on context + target tokens only, never on the whole grid."""

    def __init__(
        self,
        embed_dim: int,
        teacher_dim: int,
        grid: tuple[int, int, int],
        width: int = 512,
        depth: int = 12,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"predictor width {width} is not divisible by its {heads} heads")
        self.embed_dim = embed_dim
        self.teacher_dim = teacher_dim
        self.grid = tuple(grid)
        self.width = width
        self.depth = depth
        self.mlp_ratio = mlp_ratio
        self.grad_checkpointing = grad_checkpointing
        self.proj_in = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_3d(width, self.grid)[None], persistent=False)
        rates = np.linspace(0.0, drop_path, depth).tolist()  # plain numbers, also on "meta"
        self.blocks = nn.ModuleList(
            Block(
                width, heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=r, norm_layer=layer_norm
            )
            for r in rates
        )
        self.norm = layer_norm(width)
        self.proj_out = nn.Linear(width, teacher_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        rescale_blocks(self.blocks)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """Context tokens ``[B, Nc, Ds]`` at ``context_idx [B, Nc]`` -> predictions ``[B, Nt, Dt]``."""
        pos = self.pos_embed.expand(context.shape[0], -1, -1).to(context.dtype)
        ctx = self.proj_in(context) + gather_tokens(pos, context_idx)
        tgt = self.mask_token.to(ctx.dtype) + gather_tokens(pos, target_idx)
        x = torch.cat([ctx, tgt], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.norm(x[:, ctx.shape[1] :])
        return self.proj_out(x)

    def forward_flops(self, context_tokens: int, target_tokens: int) -> float:
        """Forward FLOPs for one sample."""
        n = context_tokens + target_tokens
        return (
            2.0 * context_tokens * self.embed_dim * self.width
            + n * block_flops_per_token(self.width, self.depth, self.mlp_ratio, n)
            + 2.0 * target_tokens * self.width * self.teacher_dim
        )
