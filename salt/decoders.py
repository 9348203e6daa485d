"""Video decoders behind one interface: decord, PyAV and torchcodec, chosen by name or
``auto``.

A reader gives a video's frame count, frame rate, frame size and codec, and reads frames by
index as ``uint8 [T, H, W, 3]``; every backend is frame-exact (frame ``i`` is the ``i``-th
frame in presentation order, as a full decode would give it). ``auto`` opens a file with
the first backend of :data:`AUTO_ORDER` that is installed and reads it, and falls back to
the next one when opening or reading fails (torchcodec needs FFmpeg's shared libraries;
decord 0.6 opens no AV1 and fails on some frame widths; PyAV reads every codec its bundled
FFmpeg has). torchcodec finds an episode's frames by the frame rate (LeRobot's videos are
constant-rate); PyAV by each frame's timestamp. The order comes from measured
speed (``docs/data.md``, ``benchmarks/test_bench_decode.py``).

Readers are opened in the process that reads (a DataLoader worker), never held across a
fork.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np

from salt.config import DECODER_CHOICES
from salt.io import first_line

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded: the sample is skipped, never fatal."""


@attrs.frozen
class Decoder:
    """A registered backend: how to open a file, and whether its library is installed."""

    name: str
    open: Callable[[Path], VideoReader]
    module: str  # the import that must succeed
    install: str  # how to get it
    description: str

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):  # a broken install counts as none
            return False


class VideoReader:
    """An open video. Subclasses set ``length``, ``fps``, ``size`` (height, width) and
    ``codec`` and implement :meth:`read`."""

    backend = "?"
    length: int
    fps: float
    size: tuple[int, int]
    codec: str

    def __len__(self) -> int:
        return self.length

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as ``uint8 [T, H, W, 3]``."""
        raise NotImplementedError

    def timestamps(self) -> list[float] | None:
        """Each frame's presentation time in seconds, when the backend knows them."""
        return None

    def frame_range(self, start: float, end: float) -> tuple[int, int]:
        """``(first, stop)``: the frames shown in ``[start, end)`` seconds, by their
        timestamps (or, without them, by the frame rate)."""
        stamps = self.timestamps()
        eps = 1e-4  # timestamps are rounded to the stream's time base
        if stamps is not None:
            return bisect.bisect_left(stamps, start - eps), bisect.bisect_left(stamps, end - eps)
        if self.fps <= 0:
            raise VideoDecodeError("the video has no frame rate to find a time span in")
        first = min(self.length, max(0, round(start * self.fps)))
        return first, min(self.length, max(first, round(end * self.fps)))

    def close(self) -> None:
        """Release the file; readers whose library closes it itself have nothing to do."""


class DecordReader(VideoReader):
    backend = "decord"

    def __init__(self, path: Path):
        import decord

        self._reader = decord.VideoReader(str(path), num_threads=1)
        self.length = len(self._reader)
        self.fps = float(self._reader.get_avg_fps() or 0.0)
        self.size = tuple(self._reader[0].shape[:2]) if self.length else (0, 0)
        self.codec = "?"  # decord does not say; errors name it through PyAV when present

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self._reader.get_batch(list(indices)).asnumpy()


class PyAVReader(VideoReader):
    """FFmpeg through PyAV. Opening demuxes the video stream once (no decoding) to learn
    every frame's timestamp and the keyframes; a read seeks to the keyframe before each run
    of wanted frames and decodes forward, so only the frames a clip needs (and those since
    their keyframe) are decoded."""

    backend = "pyav"

    def __init__(self, path: Path):
        import av

        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(f"{path} holds no video stream")
        self._stream = stream = self._container.streams.video[0]
        stream.codec_context.thread_count = 1  # parallelism comes from DataLoader workers
        self._pts, self._keys = _packet_index(path, self._container, stream)
        rate = stream.average_rate or stream.guessed_rate
        self.length = len(self._pts)
        self.fps = float(rate) if rate else 0.0
        self.size = (stream.codec_context.height, stream.codec_context.width)
        self.codec = stream.codec_context.name
        self.time_base = float(stream.time_base) if stream.time_base else 0.0

    def timestamps(self) -> list[float]:
        return [p * self.time_base for p in self._pts]  # pts x time base, as LeRobot counts

    def _keyframe_before(self, pts: int) -> int:
        return self._keys[max(0, bisect.bisect_right(self._keys, pts) - 1)]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = sorted({int(i) for i in indices})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < self.length:
            raise IndexError(f"frames {wanted[0]}..{wanted[-1]} of a {self.length}-frame video")
        targets = [self._pts[i] for i in wanted]
        got: dict[int, np.ndarray] = {}
        t = 0
        while t < len(targets):
            self._container.seek(
                self._keyframe_before(targets[t]), stream=self._stream, backward=True
            )
            for frame in self._container.decode(self._stream):
                if frame.pts is None or frame.pts < targets[t]:
                    continue
                if frame.pts > targets[t]:
                    raise VideoDecodeError(f"frame {wanted[t]} (pts {targets[t]}) was not decoded")
                got[wanted[t]] = _rgb24(frame)
                t += 1
                # Seek again when a keyframe lies between here and the next wanted frame.
                if t == len(targets) or self._keyframe_before(targets[t]) > frame.pts:
                    break
            else:
                if t < len(targets):
                    raise VideoDecodeError(f"the stream ended before frame {wanted[t]}")
        return np.stack([got[int(i)] for i in indices])

    def close(self) -> None:
        self._container.close()


# Per thread, a single-threaded RGB converter of our own. PyAV >= 17 converts through one
# SwsContext per thread with swscale's slice threads; a DataLoader worker forked after the
# parent converted a frame inherits that context without its threads and deadlocks when
# it reconfigures it. One thread per conversion (as for decoding: parallelism comes from
# the workers) starts no slice threads, so a context is safe on either side of a fork.
_CONVERTER = threading.local()


def _rgb24(frame) -> np.ndarray:
    if not hasattr(_CONVERTER, "reformat"):
        import av
        from av.video.reformatter import VideoReformatter

        # ``threads`` came with multithreaded reformatting (PyAV 17); earlier ones use one.
        one = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
        _CONVERTER.reformat = functools.partial(VideoReformatter().reformat, format="rgb24", **one)
    return _CONVERTER.reformat(frame).to_ndarray()


# Per process: a file's frame timestamps and keyframes, by (path, size, mtime). A worker
# reads many clips of one file (every episode of a LeRobot v3 video), and demuxing a long
# file for each would cost more than decoding the clip.
_INDEX: dict[tuple[str, int, int], tuple[list[int], list[int]]] = {}
_INDEX_SIZE = 512


def _packet_index(path: Path, container, stream) -> tuple[list[int], list[int]]:
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    found = _INDEX.get(key)
    if found is not None:
        return found
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.pts is None or not packet.size:
            continue
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    pts.sort()  # presentation order
    found = (pts, sorted(keys) or pts[:1])
    if len(_INDEX) >= _INDEX_SIZE:
        _INDEX.pop(next(iter(_INDEX)))
    _INDEX[key] = found
    return found


class TorchCodecReader(VideoReader):
    """torchcodec's ``VideoDecoder`` (exact seek mode: frame-exact); it needs FFmpeg's shared
    libraries on the system."""

    backend = "torchcodec"

    def __init__(self, path: Path):
        from torchcodec.decoders import VideoDecoder

        self._decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1)
        meta = self._decoder.metadata
        self.length = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)
        self.size = (int(meta.height or 0), int(meta.width or 0))
        self.codec = str(meta.codec or "?")

    def read(self, indices: Sequence[int]) -> np.ndarray:
        frames = self._decoder.get_frames_at(list(indices)).data  # [T, C, H, W] uint8
        return frames.permute(0, 2, 3, 1).numpy()


DECODERS: dict[str, Decoder] = {
    d.name: d
    for d in (
        Decoder(
            "decord",
            DecordReader,
            "decord",
            "pip install decord (Linux and Windows wheels)",
            "fastest on H.264/HEVC/VP9 at small sizes; no AV1, fails on some frame widths",
        ),
        Decoder(
            "pyav",
            PyAVReader,
            "av",
            "pip install av (a salt-vla dependency)",
            "FFmpeg's bundled build: every common codec including AV1 (dav1d); frame-exact",
        ),
        Decoder(
            "torchcodec",
            TorchCodecReader,
            "torchcodec",
            "pip install torchcodec, with FFmpeg's shared libraries on the system",
            "PyTorch's decoder; needs a system FFmpeg",
        ),
    )
}
# Frame-exact ones first, fastest first (measured: docs/data.md,
# benchmarks/test_bench_decoders.py): torchcodec where installed (it needs a system FFmpeg),
# then PyAV; decord last: it reads some HEVC frames wrong and opens no AV1.
AUTO_ORDER = ("torchcodec", "pyav", "decord")


def check_decoder(name: str) -> str:
    """A decoder name the data layer accepts (``auto`` or a backend)."""
    if name not in DECODER_CHOICES:
        raise ValueError(f"data.decoder must be one of {', '.join(DECODER_CHOICES)}, got {name!r}")
    return name


def available_decoders() -> list[str]:
    """Installed backends, in ``auto`` order."""
    return [name for name in AUTO_ORDER if DECODERS[name].available()]


def open_reader(path: Path, decoder: str = "auto") -> VideoReader:
    """An open reader for ``path``: the named backend, or (``auto``) a :class:`FallbackReader`
    over every installed backend. Failures are :class:`VideoDecodeError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"video file {str(path)!r} does not exist")
    if decoder == "auto":
        return FallbackReader(path, available_decoders())
    entry = DECODERS[check_decoder(decoder)]
    if not entry.available():
        raise VideoDecodeError(f"data.decoder={decoder!r} is not installed: {entry.install}")
    return _open_one(path, decoder)


def _open_one(path: Path, name: str) -> VideoReader:
    try:
        reader = DECODERS[name].open(path)
    except VideoDecodeError:
        raise
    except Exception as err:  # each library raises its own kinds
        raise VideoDecodeError(f"{name} cannot open {str(path)!r}: {_line(err)}") from None
    if len(reader) == 0:
        raise VideoDecodeError(f"video {str(path)!r} has no frames ({name})")
    return reader


class FallbackReader(VideoReader):
    """``auto``: the first backend that opens the file and reads what is asked; a backend
    that fails (to open, or later to read) hands over to the next."""

    backend = "auto"

    def __init__(self, path: Path, names: list[str]):
        self.path = path
        self._names = list(names)
        self._failures: list[str] = []
        if not self._names:
            raise VideoDecodeError(
                f"no video decoder is installed to read {str(path)!r}: pip install av"
            )
        self._reader = self._next()

    def _next(self) -> VideoReader:
        while self._names:
            name = self._names.pop(0)
            try:
                reader = _open_one(self.path, name)
            except VideoDecodeError as err:
                self._failures.append(f"{name}: {_line(err)}")
                continue
            self.backend = reader.backend
            self.length, self.fps, self.size = reader.length, reader.fps, reader.size
            self.codec = reader.codec
            _note_choice(self.path, reader, self._failures)
            return reader
        raise VideoDecodeError(
            f"cannot decode {str(self.path)!r} ({_codec_of(self.path)}): "
            + "; ".join(self._failures)
            + " - re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or install a decoder "
            "that reads it"
        )

    def read(self, indices: Sequence[int]) -> np.ndarray:
        while True:
            try:
                frames = self._reader.read(indices)
                if frames.shape[1:3] != tuple(self.size) and self.size != (0, 0):
                    raise VideoDecodeError(
                        f"frames of {frames.shape[1]}x{frames.shape[2]}, expected "
                        f"{self.size[0]}x{self.size[1]}"
                    )
                return frames
            except Exception as err:
                self._failures.append(f"{self._reader.backend}: {_line(err)}")
                self._reader.close()
                length = self.length
                self._reader = self._next()
                if self.length != length:  # views were drawn on the first reader's length
                    self.length = min(length, self.length)

    def timestamps(self) -> list[float] | None:
        return self._reader.timestamps()

    def close(self) -> None:
        self._reader.close()


# What ``auto`` chose in this process, by codec (``-v`` logs each new pair once).
CHOSEN: dict[str, str] = {}
# The format each (backend, the reader's own codec name) reads, so a file of a known kind is
# not opened again just to name its codec (decord names none: each of its files is asked).
_FORMATS: dict[tuple[str, str], str] = {}


def _note_choice(path: Path, reader: VideoReader, failures: list[str]) -> None:
    """Log (``-v``) the first file of each codec ``auto`` reads with each backend. Nothing
    happens without debug logging: this runs for every clip a loader opens."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    kind = (reader.backend, reader.codec)
    codec = _FORMATS.get(kind) or codec_name(path)
    if reader.codec != "?":
        _FORMATS[kind] = codec
    if CHOSEN.get(codec) == reader.backend:
        return
    CHOSEN[codec] = reader.backend
    tried = f" (after {'; '.join(failures)})" if failures else ""
    log.debug("decoder auto: %s reads %s, first in %s%s", reader.backend, codec, path, tried)


def codec_name(path: Path) -> str:
    """The codec of a file's first video stream as FFmpeg names the format (``h264``,
    ``hevc``, ``av1`` - not the decoder library), or ``?``."""
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.video
            return streams[0].codec_context.codec.canonical_name if streams else "?"
    except Exception:  # noqa: BLE001 - not a container PyAV knows
        return "?"


def survey(paths: Sequence[Path], decoder: str = "auto", limit: int = 16) -> dict[str, dict]:
    """Which backend ``decoder`` opens each codec with, over up to ``limit`` of ``paths``
    spread across them: ``{codec: {backend: files}}`` (``unreadable`` for a file none
    opens)."""
    paths = list(paths)
    picked = paths[:: max(1, len(paths) // limit)][:limit]
    found: dict[str, dict] = {}
    for path in picked:
        try:
            reader = open_reader(path, decoder)
            backend = reader.backend
            reader.close()
        except VideoDecodeError:
            backend = "unreadable"
        by_backend = found.setdefault(codec_name(path), {})
        by_backend[backend] = by_backend.get(backend, 0) + 1
    return found


def describe_survey(found: dict[str, dict], decoder: str = "auto") -> str:
    """``auto: av1 by pyav (4 files), h264 by torchcodec (12 files)``."""
    parts = [
        f"{codec} by {backend} ({count} file{'s' if count != 1 else ''})"
        for codec, backends in sorted(found.items())
        for backend, count in sorted(backends.items())
    ]
    return f"{decoder}: " + (", ".join(parts) or "no video files")


def _codec_of(path: Path) -> str:
    """The codec of a file's first video stream, as FFmpeg names it (or why unknown)."""
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.video
            return f"codec {streams[0].codec_context.name}" if streams else "no video stream"
    except Exception as err:
        return f"not a video container: {_line(err)}"


def _line(err: BaseException) -> str:
    """An error's first line, without decord's log prefix ("[12:00:00] src/x.cc:83: ")."""
    line = first_line(err)
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
        line = line.split(": ", 1)[1] if ".cc:" in line.split(": ", 1)[0] else line
    return line
