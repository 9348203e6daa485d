"""Decoding clips for training, and building a latent cache.

* 16-frame 224x224 clips (frame step 4, random start and crop) from 64-frame 256x320 videos:
  salt's decord path (``open_video`` + ``sample_view`` + ``decode_view``, as
  ``VideoDataset`` does it) against a plain PyAV loop decoding the same frames and applying
  the same resize and crop, one thread each (a DataLoader worker's share).
* The resize + crop step on its own (``crop_resize``), next to a uint8 alternative.
* ``build_cache`` over 32 small videos with a tiny teacher, DataLoader workers 0 vs 2.

The test videos carry a moving, textured pattern rather than flat colour, so that decoding
costs something like it does on real footage (a few kB per frame, not a few bytes).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salt.cache import verify_cache
from salt.cache.build import build_cache
from salt.config import build_config
from salt.masking import sample_keys, uniforms
from salt.models import teacher_of
from salt.video import View, crop_resize, decode_view, open_video, sample_view

FRAMES, HEIGHT, WIDTH, FPS = 64, 256, 320, 30  # the source videos
NUM_FRAMES, STEP, SIZE = 16, 4, 224  # the clips: span 61 of 64 frames
VIEWS_PER_VIDEO = 8
CODECS = {"mp4": ("libx264", "mpeg4"), "webm": ("libvpx-vp9", "libvpx")}
BUILD_VIDEOS = 32


def textured_frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """``uint8 [n, H, W, 3]``: smooth random texture plus grain, panning 2 px per frame."""
    rng = np.random.default_rng(seed)
    pan = 2 * n
    coarse = torch.from_numpy(rng.uniform(0, 255, (3, height // 8 + 2, (width + pan) // 8 + 2)))
    smooth = F.interpolate(coarse[None].float(), scale_factor=8, mode="bicubic")[0]
    texture = smooth.permute(1, 2, 0).numpy() + rng.uniform(-25, 25, (*smooth.shape[1:], 3))
    texture = texture.clip(0, 255).astype(np.uint8)
    return np.stack([texture[:height, 2 * t : 2 * t + width] for t in range(n)])


def write_textured(path: Path, n: int, height: int, width: int, seed: int) -> Path:
    """Encode ``textured_frames`` to ``path``; the suffix picks the container and codec."""
    last_error = None
    # vp8 stands in for vp9 where this process cannot open libvpx-vp9 (it cannot once
    # decord was imported before PyAV: their bundled FFmpeg libraries clash).
    for codec in CODECS[path.suffix.lstrip(".")]:
        try:
            with av.open(str(path), mode="w") as container:
                stream = container.add_stream(codec, rate=FPS)
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                for frame in textured_frames(n, height, width, seed):
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode())
            return path
        except av.error.FFmpegError as err:
            last_error = err
    raise RuntimeError(f"no codec could write {path}: {last_error}")


def codec_of(path: Path) -> str:
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.name


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, list[Path]]:
    """Two 64-frame 256x320 videos per container: h264 in mp4, vp9 in webm."""
    root = tmp_path_factory.mktemp("decode")
    return {
        ext: [write_textured(root / f"v{i}.{ext}", FRAMES, HEIGHT, WIDTH, seed=i) for i in range(2)]
        for ext in CODECS
    }


def training_draws(paths: list[Path]) -> list[tuple[Path, tuple[float, float, float]]]:
    """(video, uniforms for start and crop) pairs, as ``VideoDataset`` draws them."""
    keys = sample_keys(0, 0, np.arange(len(paths) * VIEWS_PER_VIDEO))
    draws = uniforms(keys, 3, stream=11)
    return [(paths[k % len(paths)], tuple(u)) for k, u in enumerate(draws)]


def decord_clip(path: Path, u: tuple[float, float, float]) -> tuple[View, torch.Tensor]:
    """salt's path: what ``VideoDataset.getitem`` does for a training sample."""
    reader = open_video(path, "decord")
    height, width = reader.size
    view = sample_view(path.name, len(reader), height, width, NUM_FRAMES, STEP, SIZE, u=u)
    return view, decode_view(reader, view)


def pyav_clip(path: Path, view: View) -> torch.Tensor:
    """A plain PyAV loop: decode from the start to the view's last frame, keep its frames
    as RGB, then the same resize and crop (``crop_resize``)."""
    wanted, last = set(view.frames), max(view.frames)
    kept = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # decord's reader is opened with one thread
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return crop_resize(np.stack([kept[i] for i in view.frames]), view)


@pytest.fixture(autouse=True)
def _one_thread(pin_threads):
    pin_threads(1)  # each DataLoader worker decodes on one core


def clips_per_s(benchmark, summary, seconds_per_call, what: str) -> float | None:
    times = seconds_per_call(benchmark)
    benchmark.extra_info.update(
        {"clip": [NUM_FRAMES, 3, SIZE, SIZE], "frame_step": STEP, "source": [FRAMES, HEIGHT, WIDTH]}
    )
    if times is None:
        summary(f"{what}: timing disabled")
        return None
    mean, best = times
    benchmark.extra_info.update(
        {"clips_per_s": 1 / mean, "clips_per_s_best": 1 / best, "ms_per_clip": 1e3 * mean}
    )
    summary(
        f"{what}: {1 / mean:.1f} clips/s ({1e3 * mean:.1f} ms per clip, best {1 / best:.1f} clips/s)"
    )
    return 1 / mean


@pytest.fixture(scope="module")
def rates() -> dict[tuple[str, str], float]:
    """clips/s by (decoder, container), to compare the two decoders once both ran."""
    return {}


@pytest.mark.benchmark(group="decode", min_rounds=8, max_time=2.0)
@pytest.mark.parametrize("container", list(CODECS))
@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_decode_clip(benchmark, summary, seconds_per_call, videos, rates, decoder, container):
    """One 16x224 training clip from a 64-frame 256x320 video, view drawn per call."""
    draws = training_draws(videos[container])
    # Views come from salt's own sampling, so both decoders read the very same frames.
    views = [decord_clip(path, u)[0] for path, u in draws]
    calls = itertools.cycle(range(len(draws)))
    if decoder == "decord":
        run = lambda: decord_clip(*draws[next(calls)])[1]  # noqa: E731
    else:
        run = lambda: pyav_clip(draws[(k := next(calls))][0], views[k])  # noqa: E731

    clip = benchmark(run)

    assert clip.shape == (NUM_FRAMES, 3, SIZE, SIZE) and clip.dtype == torch.uint8
    # Both decoders give the same pixels (both are ffmpeg underneath).
    path, u = draws[0]
    view, ours = decord_clip(path, u)
    assert (ours.int() - pyav_clip(path, view).int()).abs().float().mean() < 0.5
    assert len({v.frames[0] for v in views}) > 1 and len({v.crop for v in views}) > 1
    codec = codec_of(path)
    benchmark.extra_info.update(
        {"decoder": decoder, "container": container, "codec": codec, "threads": 1}
    )
    rate = clips_per_s(benchmark, summary, seconds_per_call, f"{decoder} {container} ({codec})")
    if rate is not None:
        rates[(decoder, container)] = rate
        other = {"decord": "pyav", "pyav": "decord"}[decoder]
        if (other, container) in rates:
            ratio = rates[("decord", container)] / rates[("pyav", container)]
            summary(f"{container}: decord path / PyAV loop = x{ratio:.2f} clips/s")


def uint8_crop_resize(frames: np.ndarray, view: View) -> torch.Tensor:
    """An alternative to ``crop_resize``: antialiased bilinear on uint8 channels-last frames
    (torch's vectorized uint8 kernel), same output layout; not used by salt."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # a channels-last view, no copy
    x = F.interpolate(x, size=view.resized, mode="bilinear", antialias=True, align_corners=False)
    top, left, h, w = view.crop
    return x[..., top : top + h, left : left + w].contiguous()


@pytest.mark.benchmark(group="resize", min_rounds=8, max_time=1.0)
@pytest.mark.parametrize("variant", ["salt_float32", "uint8_channels_last"])
def test_crop_resize(benchmark, summary, seconds_per_call, videos, variant):
    """Resize + crop of 16 decoded 256x320 frames to 224x224: the part of a clip's cost
    that is not decoding."""
    path, u = training_draws(videos["mp4"])[0]
    view, _ = decord_clip(path, u)
    frames = open_video(path).get_batch(list(view.frames)).asnumpy()  # [16, 256, 320, 3]
    resize = crop_resize if variant == "salt_float32" else uint8_crop_resize

    clip = benchmark(resize, frames, view)

    reference = crop_resize(frames, view)
    assert clip.shape == reference.shape == (NUM_FRAMES, 3, SIZE, SIZE)
    diff = (clip.int() - reference.int()).abs()
    assert diff.max() <= 1  # the uint8 kernel rounds differently, by at most one level
    benchmark.extra_info.update(
        {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.float().mean())}
    )
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["ms_per_clip"] = 1e3 * times[0]
        summary(
            f"{variant}: {1e3 * times[0]:.1f} ms per 16-frame clip "
            f"(vs salt's crop_resize: max diff {int(diff.max())}, mean {float(diff.float().mean()):.3f})"
        )


@pytest.fixture(scope="module")
def build_videos(tmp_path_factory) -> Path:
    """32 small videos (24 frames, 96x128) in 4 class folders, mp4 and webm."""
    root = tmp_path_factory.mktemp("build") / "videos"
    for i in range(BUILD_VIDEOS):
        folder = root / f"class_{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        write_textured(folder / f"v{i:02d}.{'mp4' if i % 2 else 'webm'}", 24, 96, 128, seed=100 + i)
    return root


@pytest.mark.benchmark(group="cache_build")
@pytest.mark.parametrize("workers", [0, 2])
def test_build_cache(
    benchmark, summary, seconds_per_call, pin_threads, build_videos, tmp_path, workers
):
    """``build_cache`` of 32 videos: 4 frames x 64 px, teacher random:vit_tiny (grid 2x4x4,
    dim 192), batch 8, on CPU; the teacher runs on 2 threads in the main process."""
    pin_threads(2)
    cfg = build_config(
        overrides={
            "data.spec": str(build_videos),
            "data.num_frames": 4,
            "data.frame_step": 2,
            "data.image_size": 64,
            "student.name": "vit_tiny",
            "teacher.spec": "random:vit_tiny",
        }
    )
    outs = (tmp_path / f"cache_{n}" for n in itertools.count())  # a fresh cache every round

    def build(out: Path):
        return build_cache(teacher_of(cfg), cfg, out, workers=workers, batch_size=8, progress=False)

    cache = benchmark.pedantic(build, setup=lambda: ((next(outs),), {}), rounds=3, warmup_rounds=1)

    assert len(cache) == BUILD_VIDEOS and cache.latent_shape == (32, 192)
    assert not cache.skipped and verify_cache(cache.path) == []
    split = cache.split("train")
    assert {split.view(i).resized for i in range(len(split))} == {(64, 85)}
    benchmark.extra_info.update(
        {"workers": workers, "clips": BUILD_VIDEOS, "teacher": "random:vit_tiny"}
    )
    times = seconds_per_call(benchmark)
    if times:
        mean, best = times
        # Each round builds the teacher before build_cache; that fixed cost is reported apart.
        teacher_s = min(timed(lambda: teacher_of(cfg)) for _ in range(3))
        rest = max(mean - teacher_s, 1e-9)
        benchmark.extra_info.update(
            {
                "clips_per_s": BUILD_VIDEOS / mean,
                "build_s": mean,
                "teacher_build_s": teacher_s,
                "clips_per_s_without_teacher_build": BUILD_VIDEOS / rest,
            }
        )
        summary(
            f"workers={workers}: {BUILD_VIDEOS / mean:.1f} clips/s ({mean:.2f} s per build of "
            f"{BUILD_VIDEOS}; best {BUILD_VIDEOS / best:.1f}); without the {teacher_s:.2f} s "
            f"teacher construction {BUILD_VIDEOS / rest:.1f} clips/s"
        )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
