"""Built-in plugin: frozen VideoMAE teachers loaded from local checkpoints (``videomae:PATH``)."""

from __future__ import annotations

import torch

from salt.config import ClipGeometry
from salt.contracts import Teacher
from salt.hookspecs import hookimpl
from salt.teachers import freeze
from salt_videomae.checkpoint import load_encoder
from salt_videomae.encoder import VideoMAEArch, VideoMAEEncoder

__all__ = ["VideoMAETeacher", "VideoMAEEncoder", "VideoMAEArch", "load_encoder"]


class VideoMAETeacher(Teacher):
    """A frozen VideoMAE encoder; targets are its final hidden states ``[B, N, D]``.

    Tokens come in (t, h, w) order like salt's students. The clip it receives is already
    normalized (ImageNet mean/std by default, VideoMAE's own preprocessing).
    """

    def __init__(self, encoder: VideoMAEEncoder, source: str = ""):
        super().__init__()
        self.encoder = encoder
        self.source = source
        self.teacher_dim = int(encoder.embed_dim)
        self.grid = tuple(encoder.grid)
        freeze(self)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Normalized clip ``[B, C, T, H, W]`` -> last hidden states ``[B, N, teacher_dim]``."""
        return self.encoder(video)

    def forward_flops(self) -> float:
        return self.encoder.forward_flops()

    def train(self, mode: bool = True) -> VideoMAETeacher:
        # A frozen teacher stays in eval mode whatever its parent module is switched to.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, grid={self.grid}, teacher_dim={self.teacher_dim}"


def _videomae(arg: str | None, geometry: ClipGeometry) -> VideoMAETeacher:
    if not arg:
        raise ValueError(
            "teacher 'videomae' needs a checkpoint path, e.g. videomae:/models/videomae-huge "
            "(a Hugging Face directory) or videomae:/models/vit_h_pretrain.pth (original VideoMAE)"
        )
    encoder = load_encoder(arg, num_frames=geometry.num_frames, image_size=geometry.image_size)
    return VideoMAETeacher(encoder, source=arg)


@hookimpl
def register_teachers(register):
    register(
        "videomae",
        _videomae,
        "a frozen VideoMAE v1/v2 encoder from a local HF directory or .pth: videomae:PATH",
    )
