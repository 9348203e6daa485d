"""A run's GPU memory, planned before it starts: what ``salt train --dry-run`` prints.

Per process: parameters, gradients and AdamW's two moments (fp32), the bf16 copies of the
weights autocast keeps during a step, a live teacher's weights, the batch, and the
activations the backward pass needs. Activations are measured, not guessed: one transformer
block of the student and of the predictor runs on a few tokens (on the CPU, under the run's
precision) and the bytes autograd saves per token are scaled to the run's token counts -
with flash/memory-efficient attention nothing grows with tokens squared, so they are
linear in tokens; everything outside the blocks (patch embedding, gathers, heads, loss) is
counted from a forward on the meta device. With activation checkpointing a block keeps only
its input, plus one block recomputed at a time in the backward pass.
"""

from __future__ import annotations

import copy
import math
import re

import attrs
import torch
from torch import nn

from salt.masking import MaskGroup

GIB = 1 << 30
# What a CUDA process holds outside PyTorch's allocator (context, cuBLAS/cuDNN workspaces)
# and what the caching allocator loses to fragmentation: left out of "fits".
CUDA_OVERHEAD = 1.5 * GIB
FRAGMENTATION = 0.95


def parse_size(text: str) -> int:
    """``80GB``, ``80G``, ``141GiB``, ``80000MB`` or ``80`` (GB) -> bytes. GB means GiB, as GPU
    datasheets do (an "80GB" card holds 80 GiB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|)\s*", text.lower())
    if m is None:
        raise ValueError(f"--gpu-memory {text!r} is not a size; write e.g. 80GB or 24GiB")
    value, unit = float(m.group(1)), (m.group(2) or "g")[0]
    size = int(value * 1024 ** "kmgt".index(unit) * 1024)
    if size <= 0:
        raise ValueError(f"--gpu-memory {text!r} must be positive")
    return size


@attrs.frozen
class MemoryPlan:
    """Bytes per process for one optimizer step at ``batch`` clips, by what holds them."""

    batch: int
    fixed: dict[str, float]  # name -> bytes that do not grow with the batch
    per_clip: float  # activations + inputs of one clip, without checkpointing
    per_clip_checkpointed: float  # the same with activation checkpointing
    recompute: float  # with checkpointing: one block's activations at a time, per clip
    checkpointing: bool  # what the config asks for

    def activations(self, batch: int, checkpointing: bool) -> float:
        if checkpointing:
            return batch * (self.per_clip_checkpointed + self.recompute)
        return batch * self.per_clip

    def total(self, batch: int | None = None, checkpointing: bool | None = None) -> float:
        batch = self.batch if batch is None else batch
        ckpt = self.checkpointing if checkpointing is None else checkpointing
        return sum(self.fixed.values()) + self.activations(batch, ckpt)

    def largest_batch(self, memory: int, checkpointing: bool) -> int:
        """The largest per-process batch whose plan fits ``memory`` bytes of GPU (0: none)."""
        usable = (memory - CUDA_OVERHEAD) * FRAGMENTATION - sum(self.fixed.values())
        per = self.activations(1, checkpointing)
        return max(0, int(usable // per)) if per > 0 else 0

    def lines(self, memory: int | None = None) -> list[str]:
        gib = lambda b: f"{b / GIB:.2f} GiB"  # noqa: E731
        parts = ", ".join(f"{name} {gib(b)}" for name, b in self.fixed.items() if b)
        ckpt = "on" if self.checkpointing else "off"
        lines = [
            f"memory per process at batch {self.batch}: {gib(self.total())} = {parts}, "
            f"activations {gib(self.activations(self.batch, self.checkpointing))} "
            f"(checkpointing {ckpt}; {gib(self.activations(self.batch, not self.checkpointing))}"
            f" with it {'off' if self.checkpointing else 'on'})"
        ]
        if memory is not None:
            plain = self.largest_batch(memory, False)
            ckpt_batch = self.largest_batch(memory, True)
            fits = (
                "fits"
                if self.total() <= (memory - CUDA_OVERHEAD) * FRAGMENTATION
                else ("does NOT fit")
            )
            lines.append(
                f"on a {memory / GIB:.0f} GiB GPU: batch {self.batch} {fits}; largest batch per "
                f"GPU {plain} (with student.grad_checkpointing=true: {ckpt_batch}), keeping "
                f"{CUDA_OVERHEAD / GIB:.1f} GiB for CUDA and 5% for fragmentation"
            )
        return lines


def saved_bytes(run, exclude: set[int] = frozenset()) -> float:
    """Bytes of the tensors autograd saves while ``run()`` runs, each storage once; tensors
    whose storage is in ``exclude`` (data pointers of parameters) are not counted."""
    seen: dict[object, int] = {}
    keep = []

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if t.device.type == "meta":
            key = id(t._base if t._base is not None else t)
            if t._base is not None and t._base.is_leaf and t._base.requires_grad:
                key = None  # a view of a parameter (a transposed weight)
            elif t.is_leaf and t.requires_grad:
                key = None
        else:
            key = storage.data_ptr()
            if key in exclude:
                key = None
        if key is not None and key not in seen:
            seen[key] = (
                storage.nbytes() if t.device.type != "meta" else t.numel() * t.element_size()
            )
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return float(sum(seen.values()))


def block_bytes_per_token(block: nn.Module, width: int, bf16: bool) -> float:
    """Bytes one transformer block saves per token, measured on the CPU (bf16 autocast when
    ``bf16``, as on a GPU): the slope between two token counts, so what does not grow with
    tokens (autocast's bf16 weight copies) is left out."""
    block = copy.deepcopy(block).to_empty(device="cpu").float().train()
    for p in block.parameters():  # values do not matter, only that they are finite
        nn.init.normal_(p, std=0.02)
    params = {p.data_ptr() for p in block.parameters()}

    def saved(tokens: int) -> float:
        x = torch.randn(1, tokens, width, requires_grad=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return saved_bytes(lambda: block(x), params)

    return (saved(48) - saved(16)) / 32


def plan_memory(cfg, model, masks: list[MaskGroup], teacher: nn.Module, cached: bool) -> MemoryPlan:
    """The memory plan of ``cfg``'s run; ``model`` (a SaltModel, any device) and ``masks`` of
    its first batch give the token counts; ``teacher`` the live teacher's weights."""
    bf16 = cfg.train.precision == "bf16"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in teacher.parameters()) if not cached else 0
    fixed = {
        "weights": 4.0 * trainable,
        "gradients": 4.0 * trainable,
        "AdamW moments": 8.0 * trainable,
        "bf16 weight copies": 2.0 * trainable if bf16 else 0.0,
        "teacher": 4.0 * frozen,
    }
    student, predictor = model.student, model.predictor
    s_block = block_bytes_per_token(student.blocks[0], student.embed_dim, bf16)
    p_width = predictor.blocks[0].norm1.normalized_shape[0]
    p_block = block_bytes_per_token(predictor.blocks[0], p_width, bf16)
    s_tokens = sum(g.context.shape[1] for g in masks)
    p_tokens = sum(g.context.shape[1] + g.target.shape[1] for g in masks)
    s_depth, p_depth = len(student.blocks), len(predictor.blocks)
    blocks = s_depth * s_tokens * s_block + p_depth * p_tokens * p_block
    kept = 4  # a checkpointed block keeps its input: the residual stream, fp32 under autocast
    checkpointed = (s_depth * s_tokens * student.embed_dim + p_depth * p_tokens * p_width) * kept
    # The backward recomputes one block at a time: its activations and, as it runs, their
    # gradients (about as large).
    recompute = 2 * max(
        max(g.context.shape[1] for g in masks) * s_block,
        max(g.context.shape[1] + g.target.shape[1] for g in masks) * p_block,
    )
    outside = _outside_blocks(model, masks, cfg)
    teacher_dim = getattr(teacher, "teacher_dim", 0)
    tokens = cfg.geometry.num_tokens
    # The batch: uint8 clip, its normalized float copy, the targets (fp32 for the loss).
    clip = cfg.data.num_frames * 3 * cfg.data.image_size**2
    inputs = clip * (1 + 4) + tokens * teacher_dim * 4
    return MemoryPlan(
        batch=cfg.train.batch_size,
        fixed=fixed,
        per_clip=blocks + outside + inputs,
        per_clip_checkpointed=checkpointed + outside + inputs,
        recompute=recompute,
        checkpointing=cfg.student.grad_checkpointing,
    )


def _outside_blocks(model, masks: list[MaskGroup], cfg) -> float:
    """Bytes saved per clip outside the transformer blocks (meta device, fp32: an upper
    bound under bf16)."""
    with torch.device("meta"):
        bare = copy.deepcopy(model).to("meta")
    bare.student.blocks = nn.ModuleList()
    bare.predictor.blocks = nn.ModuleList()
    bare.train()
    one = [MaskGroup(g.context[:1].to("meta"), g.target[:1].to("meta")) for g in masks]
    size = cfg.data.image_size
    video = torch.empty(1, 3, cfg.data.num_frames, size, size, device="meta")

    def run():
        preds = bare(video, one)
        return sum(p.float().square().mean() for p in preds)

    return saved_bytes(run)


def measured_ratio(plan: MemoryPlan, measured: float) -> float:
    """Measured peak over the planned total (1 is exact)."""
    return measured / plan.total() if plan.total() else math.inf
