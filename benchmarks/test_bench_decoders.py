"""Which decoder reads what, how exactly and how fast: the table behind ``auto``.

For H.264, HEVC, VP9 and AV1 at 144p, 720p and 1080p (64-frame textured videos written
with PyAV, a keyframe every 32 frames, B-frames where the encoder uses them), and for
every installed backend (decord, PyAV, torchcodec):

- coverage: does salt's reader open the file and read a training clip;
- accuracy: the clip's 16 frames against a plain sequential PyAV decode of the file;
- speed: 16-frame 224x224 training clips per second on one core, through salt's own path
  (``open_video`` + ``view_of`` + ``decode_view``, a new reader per clip as a DataLoader
  worker opens one per sample).

``--benchmark-disable`` runs each cell once (coverage and accuracy only). Writing the
1080p videos takes ~1 minute.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from salt.decoders import _INDEX, DECODERS, VideoDecodeError, available_decoders
from salt.masking import sample_keys, uniforms
from salt.video import decode_view, open_video, view_of

FRAMES, FPS, GOP = 64, 30, 32
NUM_FRAMES, STEP, SIZE = 16, 4, 224
SIZES = {"144p": (144, 256), "720p": (720, 1280), "1080p": (1080, 1920)}
ENCODERS = {
    "h264": ("libx264", ".mp4", {"preset": "veryfast"}),
    "hevc": ("libx265", ".mp4", {"preset": "ultrafast", "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", ".webm", {"deadline": "realtime", "cpu-used": "8"}),
    "av1": ("libsvtav1", ".mp4", {"preset": "12"}),
}


def textured(n: int, height: int, width: int) -> np.ndarray:
    """A panning, grainy texture: costs something to decode, like real footage."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 16 + 2, (width + 4 * n) // 16 + 2, 3), np.uint8)
    texture = np.kron(coarse, np.ones((16, 16, 1), np.uint8))
    grain = rng.integers(0, 24, texture.shape, np.uint8)
    texture = texture // 2 + grain
    return np.stack([texture[:height, 4 * t : 4 * t + width] for t in range(n)])


def write(path: Path, codec: str, options: dict, height: int, width: int) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP
        for frame in textured(FRAMES, height, width):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("decoders")
    made = {}
    for (codec, (encoder, suffix, options)), (size, (h, w)) in itertools.product(
        ENCODERS.items(), SIZES.items()
    ):
        if encoder in av.codecs_available:
            made[(codec, size)] = write(root / f"{codec}_{size}{suffix}", encoder, options, h, w)
    return made


@pytest.fixture(scope="module")
def table() -> dict:
    return {}


def reference(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def clip(path: Path, decoder: str, u) -> tuple:
    """salt's path for one training clip, from a cold open: the per-process packet index
    is dropped first, as a worker meets most files of a large dataset once per epoch."""
    _INDEX.clear()
    reader = open_video(path, decoder)
    view = view_of(reader, path.name, NUM_FRAMES, STEP, SIZE, u=u)
    return view, decode_view(reader, view)


@pytest.fixture(autouse=True)
def _one_thread(pin_threads):
    pin_threads(1)


@pytest.mark.benchmark(group="decoders", min_rounds=3, max_time=1.0)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("codec", list(ENCODERS))
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_decoder(benchmark, summary, seconds_per_call, videos, table, decoder, codec, size):
    if decoder not in available_decoders():
        pytest.skip(f"{decoder} is not installed")
    if (codec, size) not in videos:
        pytest.skip(f"this PyAV build cannot encode {codec}")
    path = videos[(codec, size)]
    draws = [tuple(u) for u in uniforms(sample_keys(0, 0, np.arange(8)), 3, stream=11)]
    try:
        view, ours = clip(path, decoder, draws[0])
    except VideoDecodeError as err:
        table[(decoder, codec, size)] = "cannot read"
        summary(f"{decoder} {codec} {size}: cannot read ({str(err)[:80]})")
        benchmark.extra_info.update({"reads": False})
        return
    # accuracy: the same frames, cropped and resized the same way, from a full decode
    from salt.video import crop_resize

    expected = crop_resize(reference(path)[list(view.frames)], view)
    exact = bool((ours == expected).all())
    worst = int((ours.int() - expected.int()).abs().max())
    calls = itertools.cycle(draws)
    benchmark(lambda: clip(path, decoder, next(calls)))
    times = seconds_per_call(benchmark)
    rate = 1 / times[0] if times else float("nan")
    benchmark.extra_info.update({"reads": True, "exact": exact, "max_abs_diff": worst})
    benchmark.extra_info["clips_per_s"] = rate
    table[(decoder, codec, size)] = f"{rate:.1f}" + ("" if exact else f" (off by {worst})")
    summary(
        f"{decoder} {codec} {size}: {rate:.1f} clips/s, {'exact' if exact else f'max diff {worst}'}"
    )
    assert ours.shape == (NUM_FRAMES, 3, SIZE, SIZE)
