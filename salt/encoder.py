"""``VideoEncoder``: a trained SALT student as a frozen video backbone for VLA policies.

It loads an export (``config.json`` + ``model.safetensors``), a run or a checkpoint
strictly and without unpickling, takes raw video as ``[B, T, C, H, W]`` (the Hugging Face
and LeRobot convention), uint8 0..255 or float in [0, 1], normalizes it with the stored
mean/std and returns patch tokens ``[B, N, D]``, pooled vectors or per-frame vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from salt.config import DataConfig
from salt.data import normalize_clips
from salt.export import FORMAT, build_encoder, check_encoder_config, load_encoder, write_export
from salt.video import VideoDecodeError, read_centre_view

LAYOUTS = ("BTCHW", "BCTHW")
POOLS = ("mean", "frames", "none")
# Float video is checked to be in [0, 1] with this slack (resizing can overshoot a little);
# 0..255 floats or already-normalized clips fall far outside it.
FLOAT_RANGE = (-0.5, 1.5)


class EncoderOutput(NamedTuple):
    """``forward(..., output_hidden_states=True)``: the final tokens and every layer's."""

    last_hidden_state: torch.Tensor  # [B, N, D], normed: what forward returns
    hidden_states: tuple[torch.Tensor, ...]  # embeddings, then each block: depth + 1


class VideoEncoder(nn.Module):
    """A video ViT that takes raw clips and returns its final, normed patch tokens.

    ``encoder(video)``: ``[B, T, C, H, W]`` (or ``[B, C, T, H, W]`` with
    ``layout="BCTHW"``), uint8 0..255 or float in [0, 1] (any float dtype; it is normalized
    in float32, then cast to the encoder's dtype) -> tokens ``[B, N, D]`` in (t, h, w)
    order, ``N = T/tubelet * H/patch * W/patch``. A single frame (T=1: an image, as in
    many policies) is repeated over one tubelet, as V-JEPA 2 takes images. Clips of other frame counts or sizes
    (multiples of the tubelet and patch, square or not) work: positions are computed for
    their grid (sin-cos) or resampled (learned tables). Other integer dtypes are refused;
    float video is checked to lie in [0, 1] (one reduction, skipped under ``torch.compile``)
    so that 0..255 floats or clips normalized twice fail loudly instead of encoding noise.
    """

    def __init__(self, model: nn.Module, config: dict):
        super().__init__()
        self.model = model  # [B, C, T, H, W] normalized -> [B, N, D]
        self.config = dict(config)
        self.mean = tuple(float(v) for v in config["mean"])
        self.std = tuple(float(v) for v in config["std"])
        self.num_frames = int(config["num_frames"])
        self.image_size = int(config["image_size"])
        self.patch_size = int(config["patch_size"])
        self.tubelet_size = int(config["tubelet_size"])
        self.frame_step = int(config.get("frame_step", 1))
        self.embed_dim = self.num_features = int(model.embed_dim)
        self.in_chans = int(getattr(model, "in_chans", 3))

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> VideoEncoder:
        """Load an export directory (or its ``model.safetensors``), a run directory, a
        checkpoint or a Hugging Face Hub repo id (``"org/name"``, at ``revision``; the Hub's
        cache and ``HF_HUB_OFFLINE`` apply; ``cache_dir``, ``local_files_only`` and
        ``token`` as transformers takes them), then move it to ``device``/``dtype``; every
        weight must match the architecture (no missing or extra keys). Exports are
        safetensors; checkpoints are read with ``torch.load(weights_only=True)``.

        What looks like a path (``./``, ``../``, ``/``, ``~``, a drive, a backslash, more
        than one ``/``, a file suffix, or a first part such as ``runs/`` that is a local
        folder) is never sent to the Hub: a missing one is a ``FileNotFoundError`` naming
        it. A Hub id with no network fails within seconds, or loads the cached copy."""
        hub = {"cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
        model, config = load_encoder(path, revision, **hub)
        return cls(model, config).to(device=device, dtype=dtype).eval()

    @classmethod
    def from_config(
        cls,
        config: dict,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> VideoEncoder:
        """An untrained (randomly initialized) encoder with a config's architecture, e.g. a
        baseline for a trained one; seed with ``torch.manual_seed`` first. ``config`` holds
        an export's fields (architecture, num_frames, image_size, patch_size, tubelet_size,
        mean, std, ...), checked as a loaded one is, so ``save_pretrained`` writes an export
        that loads back."""
        config = check_encoder_config({"format": FORMAT, "version": 1, **config}, "from_config")
        return cls(build_encoder(config), config).to(device=device, dtype=dtype).eval()

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` + a model card (the ``salt export``
        format, weights in the encoder's current dtype) to a directory; the files there are
        overwritten."""
        weights = {k: v.cpu() for k, v in self.model.state_dict().items()}
        return write_export(Path(path), weights, self.config)

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool = False,
        commit_message: str = "Upload salt-vla encoder",
        revision: str | None = None,
        create_pr: bool = False,
    ) -> str:
        """Save this encoder and upload it to the Hugging Face Hub as ``repo_id`` in one
        commit (the repo, and the branch ``revision``, created if needed; ``create_pr``
        opens a pull request instead; needs a write token: ``hf auth login`` or
        ``HF_TOKEN``). Returns the commit's (or the PR's) URL."""
        import tempfile

        from salt.hub import push_to_hub

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(tmp)
            options = {"commit_message": commit_message, "revision": revision}
            return push_to_hub(folder, repo_id, token, private, **options, create_pr=create_pr)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip at the training geometry."""
        return tuple(self.model.grid)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (inputs are cast to it after normalization)."""
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device

    def freeze(self) -> VideoEncoder:
        """Stop gradients to every weight and switch to eval mode; returns the encoder."""
        self.requires_grad_(False)
        return self.eval()

    def forward(
        self, video: torch.Tensor, layout: str = "BTCHW", output_hidden_states: bool = False
    ) -> torch.Tensor | EncoderOutput:
        """Raw video -> final normed patch tokens ``[B, N, D]`` (no CLS token).

        ``output_hidden_states=True`` returns an :class:`EncoderOutput` instead, as
        transformers' models do: ``last_hidden_state`` (the same tokens) and
        ``hidden_states``, the patch embeddings then each block's output ``[B, N, D]``
        (``depth + 1`` tensors, not normed; the last one normed is ``last_hidden_state``)."""
        x = self.preprocess(video, layout)
        if not output_hidden_states:
            return self.model(x, dynamic_size=True)
        blocks = list(range(len(self.model.blocks)))
        layers = self.model.get_intermediate_layers(x, blocks, dynamic_size=True)
        embedded = self.model.embed(x, dynamic_size=True)
        return EncoderOutput(self.model.norm(layers[-1]), (embedded, *layers))

    def encode(
        self, video: torch.Tensor, pool: str = "mean", layout: str = "BTCHW"
    ) -> torch.Tensor:
        """Raw video -> ``[B, D]`` (``pool="mean"``), ``[B, T', D]`` (``"frames"``: the mean of
        each time slice's tokens) or ``[B, T', H', W', D]`` (``"none"``)."""
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(map(repr, POOLS))}, got {pool!r}")
        x = self.preprocess(video, layout)
        grid = self.model.grid_of(x)
        tokens = self.model(x, dynamic_size=True)  # [B, N, D]
        if pool == "mean":
            return tokens.mean(dim=1)
        tokens = tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1])
        return tokens.mean(dim=(2, 3)) if pool == "frames" else tokens

    def get_intermediate_layers(
        self,
        video: torch.Tensor,
        n: int | Sequence[int] = 1,
        norm: bool = False,
        layout: str = "BTCHW",
    ) -> tuple[torch.Tensor, ...]:
        """Tokens ``[B, N, D]`` after each of the last ``n`` blocks (or the blocks at the given
        indices), in block order; ``norm=True`` applies the final norm to each."""
        x = self.preprocess(video, layout)
        return self.model.get_intermediate_layers(x, n, norm=norm, dynamic_size=True)

    def encode_file(
        self, path: str | Path, pool: str = "mean", position: float = 0.5
    ) -> torch.Tensor:
        """Decode one clip of a video file the way the encoder was trained (``num_frames``
        frames ``frame_step`` apart, short side resized to ``image_size``, centre crop; the
        window starts at ``position`` of the free range) and encode it with a batch of one."""
        path = Path(path)
        if path.is_dir():
            raise VideoDecodeError(f"{str(path)!r} is a folder; give one video file")
        fps = float(self.config.get("fps", 0) or 0)  # trained at a frame rate, as VideoDataset
        data = DataConfig(
            num_frames=self.num_frames,
            frame_step=self.frame_step,
            image_size=self.image_size,
            fps=fps,
        )
        _, clip = read_centre_view(path, path.name, data, position=position)  # uint8 [T, C, H, W]
        return self.encode(clip[None].to(self.device), pool=pool)

    def preprocess(self, video: torch.Tensor, layout: str = "BTCHW") -> torch.Tensor:
        """Raw video in ``layout`` -> normalized model input ``[B, C, T, H, W]`` in the
        encoder's dtype, after checking its shape, dtype and (for floats) value range."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'BTCHW' or 'BCTHW', got {layout!r}")
        if not isinstance(video, torch.Tensor):
            raise TypeError(
                f"video must be a torch.Tensor, got {type(video).__name__}; "
                f"use torch.from_numpy(...) for arrays"
            )
        self._check_shape(video, layout)
        self._check_dtype(video)
        if layout == "BCTHW":
            video = video.transpose(1, 2)
        if video.shape[1] == 1 and self.tubelet_size > 1:
            # An image (T=1), as V-JEPA 2 takes one: repeated over one tubelet, a single
            # time slice of tokens.
            video = video.expand(-1, self.tubelet_size, -1, -1, -1)
        x = normalize_clips(video, self.mean, self.std, dtype=torch.float32)
        return x.to(self.dtype)

    def _check_shape(self, video: torch.Tensor, layout: str) -> None:
        shape = tuple(video.shape)
        c = self.in_chans
        want = f"(B, T, C, H, W) with C={c}" if layout == "BTCHW" else f"(B, C, T, H, W) with C={c}"
        if video.ndim != 5:
            hint = (
                "; add the batch dimension with video[None] for one clip" if video.ndim == 4 else ""
            )
            raise ValueError(f"expected {want}, got {shape}{hint}")
        channel_dim, time_dim = (2, 1) if layout == "BTCHW" else (1, 2)
        if shape[channel_dim] != c:
            hint = ""
            if shape[time_dim] == c:
                other = "BCTHW" if layout == "BTCHW" else "BTCHW"
                where = "second" if other == "BCTHW" else "third"
                hint = f"; pass layout={other!r} if channels come {where}"
            elif shape[-1] == c:
                hint = "; channels-last video needs video.permute(0, 1, 4, 2, 3) first"
            raise ValueError(f"expected {want}, got {shape}{hint}")
        t, h, w = shape[time_dim], shape[3], shape[4]
        if t != 1 and (t < self.tubelet_size or t % self.tubelet_size):
            fix = max(self.tubelet_size, t - t % self.tubelet_size)
            raise ValueError(
                f"expected one frame (an image) or a frame count T that is a multiple of the "
                f"tubelet size {self.tubelet_size}, got T={t} in {shape}; pad or drop frames (e.g. to "
                f"T={fix}; the encoder was trained on T={self.num_frames})"
            )
        if h < self.patch_size or w < self.patch_size or h % self.patch_size or w % self.patch_size:
            p = self.patch_size
            fix_h, fix_w = max(p, h - h % p), max(p, w - w % p)
            raise ValueError(
                f"expected H and W that are multiples of the patch size {p}, got "
                f"{h}x{w} in {shape}; resize or crop (e.g. to {fix_h}x{fix_w}; the encoder "
                f"was trained at {self.image_size}x{self.image_size})"
            )

    def _check_dtype(self, video: torch.Tensor) -> None:
        if video.dtype == torch.uint8:
            return
        if not video.is_floating_point():
            raise ValueError(
                f"expected uint8 video (0..255) or float video in [0, 1], got {video.dtype}; "
                f"convert with video.to(torch.uint8) if its values are 0..255"
            )
        # Skipped while compiling: a data-dependent check would break the graph.
        if video.numel() == 0 or torch.compiler.is_compiling():
            return
        low, high = (float(v) for v in torch.aminmax(video.detach()))
        if not math.isfinite(low + high) or low < FLOAT_RANGE[0] or high > FLOAT_RANGE[1]:
            raise ValueError(
                f"expected float video in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
                f"divide 0..255 video by 255 (or pass it as uint8), and do not normalize it "
                f"yourself: the encoder applies its own mean/std"
            )

    def extra_repr(self) -> str:
        return (
            f"architecture={self.config.get('architecture')!r}, num_frames={self.num_frames}, "
            f"image_size={self.image_size}, tubelet_size={self.tubelet_size}, "
            f"patch_size={self.patch_size}, embed_dim={self.embed_dim}"
        )


__all__ = ["VideoEncoder", "EncoderOutput"]
