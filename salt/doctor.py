"""`salt doctor`: what works on this machine, and the fix for what does not."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import attrs


@attrs.frozen
class Check:
    """One finding: OK, WARN (works, with a caveat) or FAIL, with a fix when not OK."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return attrs.asdict(self)


def check_torch() -> Check:
    import torch

    threads = torch.get_num_threads()
    return Check("torch", "OK", f"torch {torch.__version__}, {threads} CPU threads")


def check_cuda() -> Check:
    import torch

    if not torch.backends.cuda.is_built():
        return Check(
            "cuda",
            "WARN",
            "this torch build has no CUDA support; training runs on CPU",
            "install a CUDA build of torch from pytorch.org to train on a GPU",
        )
    try:
        count = torch.cuda.device_count()
        available = torch.cuda.is_available()
    except Exception as err:  # noqa: BLE001 - report any driver failure
        return Check("cuda", "FAIL", f"CUDA initialisation failed: {err}", _SANDBOX_HINT)
    if not available or count == 0:
        return Check("cuda", "WARN", "no GPU visible to torch; training runs on CPU", _SANDBOX_HINT)
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    return Check("cuda", "OK", f"{count} GPU(s): {names}; CUDA {torch.version.cuda}")


_SANDBOX_HINT = (
    "inside containers and sandboxes CUDA/NVML can fail even when `nvidia-smi` works in a "
    "normal shell: check that the container was started with GPU access (docker --gpus all, "
    "or the runtime's device plugin), that CUDA_VISIBLE_DEVICES is not empty, and run "
    "`nvidia-smi` and `python -c 'import torch; print(torch.cuda.is_available())'` in the same "
    "environment as salt"
)


def check_nvml() -> Check:
    lib = None
    for name in ("libnvidia-ml.so.1", "libnvidia-ml.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return Check(
            "nvml",
            "WARN",
            "NVML (libnvidia-ml) not found: no NVIDIA driver here",
            "on a GPU machine, install the NVIDIA driver; " + _SANDBOX_HINT,
        )
    code = lib.nvmlInit_v2()
    if code != 0:
        return Check("nvml", "FAIL", f"nvmlInit failed with code {code}", _SANDBOX_HINT)
    count = ctypes.c_uint(0)
    lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
    lib.nvmlShutdown()
    return Check("nvml", "OK", f"NVML sees {count.value} device(s)")


def check_decoders() -> Check:
    """Which video decoders are installed (``auto`` uses them in this order)."""
    from salt.decoders import AUTO_ORDER, DECODERS, available_decoders

    found = available_decoders()
    missing = [name for name in AUTO_ORDER if name not in found]
    detail = f"installed: {', '.join(found) or 'none'}" + (
        f"; not installed: {', '.join(missing)}" if missing else ""
    )
    if "pyav" not in found:
        return Check("decoders", "FAIL" if not found else "WARN", detail, DECODERS["pyav"].install)
    return Check("decoders", "OK", detail)


# The codecs robot and web video come in, and the FFmpeg encoder doctor writes a probe with.
PROBE_CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
# Quiet, and single-threaded: SVT-AV1 starts dozens of threads otherwise.
PROBE_OPTIONS = {
    "libx265": {"x265-params": "log-level=error"},
    "libsvtav1": {"svtav1-params": "lp=1"},
}


def check_codecs() -> Check:
    """Which backend ``auto`` reads each common codec with, and which codecs each backend
    cannot read: tried on tiny clips encoded here (by PyAV's FFmpeg)."""
    import tempfile

    from salt.decoders import available_decoders

    with tempfile.TemporaryDirectory() as tmp:
        clips = write_probe_clips(Path(tmp))
        if not clips:
            return Check("codecs", "WARN", "PyAV has none of the probe encoders; not checked")
        cannot = {n: [c for c, p in clips.items() if not reads(p, n)] for n in available_decoders()}
        auto = {codec: reads(path, "auto") for codec, path in clips.items()}
    detail = "auto reads " + ", ".join(f"{c} with {b or 'nothing'}" for c, b in auto.items())
    detail += "".join(f"; {n} cannot read {', '.join(cs)}" for n, cs in cannot.items() if cs)
    unread = [codec for codec, backend in auto.items() if not backend]
    if unread:
        fix = f"install a decoder that reads {', '.join(unread)} (pip install av)"
        return Check("codecs", "WARN", detail, fix)
    return Check("codecs", "OK", detail)


def write_probe_clips(folder: Path) -> dict[str, Path]:
    """An 8-frame 64x64 clip per codec PyAV's FFmpeg can encode, its encoders' chatter kept
    off the terminal."""
    import av
    import numpy as np

    frames = (np.arange(8)[:, None, None, None] * 16 + np.zeros((8, 64, 64, 3))).astype(np.uint8)
    clips = {}
    with quiet_stderr():
        for codec, encoder in PROBE_CODECS.items():
            if encoder not in av.codecs_available:
                continue
            path = folder / f"{codec}.mp4"
            try:
                with av.open(str(path), "w") as out:
                    stream = out.add_stream(encoder, rate=8, options=PROBE_OPTIONS.get(encoder, {}))
                    stream.width = stream.height = 64
                    stream.pix_fmt = "yuv420p"
                    for frame in frames:
                        out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                    out.mux(stream.encode())
            except Exception:  # noqa: BLE001 - an encoder this FFmpeg lists but cannot run
                continue
            clips[codec] = path
    return clips


def reads(path: Path, decoder: str) -> str:
    """The backend that read the first and last frames of ``path`` with ``decoder``, or ""."""
    from salt.decoders import open_reader

    try:
        reader = open_reader(path, decoder)
        reader.read([0, len(reader) - 1])
        backend = reader.backend
        reader.close()
        return backend
    except Exception:  # noqa: BLE001 - any failure means it cannot read this codec
        return ""


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null (C libraries write there, below Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_shared_memory() -> Check:
    path = "/dev/shm"
    if not os.path.isdir(path):
        return Check(
            "shared memory",
            "WARN",
            "/dev/shm is missing; DataLoader workers may fail",
            "use --set data.num_workers=0, or mount a tmpfs at /dev/shm",
        )
    free = shutil.disk_usage(path).free
    try:
        import torch

        torch.zeros(1024).share_memory_()
    except Exception as err:  # noqa: BLE001
        return Check(
            "shared memory",
            "FAIL",
            f"cannot create shared tensors: {err}",
            "run with --set data.num_workers=0, or give the container more shared "
            "memory (docker run --shm-size=8g)",
        )
    status = "OK" if free >= 1 << 30 else "WARN"
    fix = (
        ""
        if status == "OK"
        else (
            "workers pass batches through /dev/shm: give it more room (docker run --shm-size=8g) "
            "or lower data.num_workers"
        )
    )
    return Check("shared memory", status, f"/dev/shm has {free / 2**30:.1f} GiB free", fix)


def check_semaphores() -> Check:
    try:
        lock = multiprocessing.get_context("fork").Lock()
        lock.acquire()
        lock.release()
    except Exception as err:  # noqa: BLE001
        return Check(
            "semaphores",
            "FAIL",
            f"multiprocessing semaphores are unavailable: {err}",
            "DataLoader workers need POSIX semaphores (a writable /dev/shm); run with "
            "--set data.num_workers=0 or fix the sandbox's /dev/shm permissions",
        )
    return Check("semaphores", "OK", "multiprocessing semaphores work (DataLoader workers can run)")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_torch,
    check_cuda,
    check_nvml,
    check_decoders,
    check_codecs,
    check_shared_memory,
    check_semaphores,
)


def run_checks() -> list[Check]:
    """Run every check; a check that crashes is reported, never raised."""
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as err:  # noqa: BLE001
            results.append(
                Check(check.__name__.removeprefix("check_"), "FAIL", f"check crashed: {err}")
            )
    return results
