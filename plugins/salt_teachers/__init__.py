"""Built-in plugin: the pixel teacher (stage 1) and a frozen random-init encoder teacher."""

from __future__ import annotations

import torch

from salt.config import ClipGeometry
from salt.contracts import Teacher
from salt.hookspecs import hookimpl
from salt.registry import students


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Video ``[B, C, T, H, W]`` -> tubelet pixels ``[B, N, tubelet*patch*patch*C]`` in token order."""
    b, c, t, h, w = video.shape
    x = video.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), -1)


class PixelTeacher(Teacher):
    """Targets are each tubelet's pixels, normalized per patch (VideoMAE's ``norm_pix``);
    ``motion``: each frame's change from the frame before instead, unnormalized, so still
    regions are ~0 and moving edges carry the loss."""

    def __init__(
        self,
        grid,
        tubelet_size: int,
        patch_size: int,
        in_chans: int = 3,
        norm_pix: bool = True,
        motion: bool = False,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.norm_pix = norm_pix and not motion
        self.motion = motion
        self.teacher_dim = in_chans * tubelet_size * patch_size * patch_size

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        video = video.float()
        if self.motion:
            change = video[:, :, 1:] - video[:, :, :-1]
            video = torch.cat([change[:, :, :1], change], dim=2)  # frame 0: the first change
        pixels = patchify(video, self.tubelet_size, self.patch_size)
        if not self.norm_pix:
            return pixels
        mean = pixels.mean(dim=-1, keepdim=True)
        var = pixels.var(dim=-1, unbiased=True, keepdim=True)
        return (pixels - mean) / (var + 1e-6).sqrt()


class EncoderTeacher(Teacher):
    """A frozen encoder's final tokens for the whole clip."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.grid = tuple(encoder.grid)
        self.teacher_dim = int(encoder.embed_dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.encoder(video)

    def forward_flops(self) -> float:
        return float(self.encoder.forward_flops(self.encoder.num_tokens))


def _pixels(arg: str | None, geometry: ClipGeometry) -> PixelTeacher:
    norm = {None: True, "": True, "norm": True, "raw": False, "motion": False}
    if arg not in norm:
        raise ValueError(
            f"teacher 'pixels' takes 'pixels', 'pixels:raw' or 'pixels:motion', got pixels:{arg}"
        )
    g = geometry
    return PixelTeacher(
        g.grid, g.tubelet_size, g.patch_size, norm_pix=norm[arg], motion=arg == "motion"
    )


def _random(arg: str | None, geometry: ClipGeometry) -> EncoderTeacher:
    if not arg:
        raise ValueError(
            "teacher 'random' needs an architecture, e.g. 'random:vit_tiny'; "
            f"students: {', '.join(students.names())}"
        )
    # A fixed seed, isolated from the run's RNG: the same spec always means the same teacher.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = students.create(arg, **geometry.model_kwargs())
    return EncoderTeacher(encoder)


def _encoder(arg: str | None, geometry: ClipGeometry) -> EncoderTeacher:
    from salt.export import load_encoder

    if not arg:
        raise ValueError(
            "teacher 'encoder' needs an exported encoder, a run or a checkpoint (a path), or "
            "a Hugging Face Hub repo id (org/name), e.g. encoder:runs/teacher"
        )
    encoder, config = load_encoder(arg)
    if (config["num_frames"], config["image_size"]) != (geometry.num_frames, geometry.image_size):
        raise ValueError(
            f"teacher encoder:{arg} takes {config['num_frames']}-frame clips at "
            f"{config['image_size']}px, but data is {geometry.num_frames} frames at "
            f"{geometry.image_size}px; set data.num_frames and data.image_size to match"
        )
    return EncoderTeacher(encoder)


@hookimpl
def register_teachers(register):
    register(
        "pixels",
        _pixels,
        "stage 1: per-patch normalized tubelet pixels (pixels:raw skips the norm; "
        "pixels:motion: each frame's change from the one before)",
    )
    register(
        "encoder",
        _encoder,
        "a trained salt encoder: encoder:EXPORT_DIR, a run directory, a checkpoint or a Hub "
        "repo id (org/name)",
    )
    register("random", _random, "a frozen randomly initialized encoder, e.g. random:vit_tiny")
