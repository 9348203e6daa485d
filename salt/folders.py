"""The folders salt writes - runs, latent caches, exports, quickstarts: whose they are, one
writer at a time, and what ``--force`` may replace.

* **Ownership.** A folder salt writes into holds ``.salt-lock``, which names its kind.
  Before it removes or replaces anything there, salt checks that the folder is empty or
  holds the same kind of output (folders written before the lock file existed are known by
  their own files); a folder holding anything else is refused, ``--force`` or not.
* **One writer.** ``salt train``, ``salt cache build`` and ``salt quickstart`` hold an
  exclusive ``flock`` on ``.salt-lock`` for their whole life. The kernel drops it when the
  process dies (``kill -9`` included), so a crash never leaves a stale lock. The file
  records the holder (host, PID, command, start) for the message a second writer gets,
  and a heartbeat rewritten every :data:`HEARTBEAT_S` seconds: on a shared filesystem that
  does not carry ``flock`` between hosts, a lock naming another host whose heartbeat is
  younger than :data:`STALE_S` is refused too (this needs clocks kept in step, e.g. NTP).
* **Whole replacement.** An export is written in full into a hidden folder beside its
  destination, then swapped in with one rename (``renameat2(RENAME_EXCHANGE)`` on Linux),
  so the destination holds the old export or the new one, never a mix.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from salt.io import UMASK, check_folder, is_salt_temp, temp_prefix

try:
    import fcntl
except ImportError:  # Windows: the heartbeat alone guards the folder
    fcntl = None

log = logging.getLogger(__name__)

LOCK = ".salt-lock"
RUN, CACHE, EXPORT, QUICKSTART = "run", "cache", "export", "quickstart"
EMPTY = "empty"
WHAT = {
    RUN: "a salt run",
    CACHE: "a salt latent cache",
    EXPORT: "an exported encoder",
    QUICKSTART: "a salt quickstart folder",
}
# What an export folder holds; anything else there is the user's.
EXPORT_FILES = ("config.json", "model.safetensors", "README.md")
HEARTBEAT_S = 10.0
STALE_S = 60.0
_RECORD_BYTES = 1024  # the lock's record is rewritten in place, padded to one size


class FolderRefused(FileExistsError):
    """A folder salt would write into holds something it must not remove or mix with."""


class FolderLocked(RuntimeError):
    """Another process is writing the folder."""


# ----------------------------------------------------------------------------- ownership


def folder_kind(folder: Path) -> str | None:
    """What ``folder`` holds: one of :data:`WHAT`'s kinds, :data:`EMPTY` (absent, or nothing
    but salt's lock and temp files) or None (files salt did not write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return EMPTY if not folder.exists() else None
    if not entries(folder):
        return EMPTY
    recorded = _read_record(folder / LOCK).get("kind")
    if recorded in WHAT:
        return recorded
    for kind, looks_like in _SIGNATURES:
        if looks_like(folder):
            return kind
    return None


def entries(folder: Path) -> list[Path]:
    """The folder's entries that are not salt's lock or temp files."""
    return sorted(p for p in folder.iterdir() if p.name != LOCK and not is_salt_temp(p.name))


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_run(folder: Path) -> bool:
    ckpts = folder / "checkpoints"
    if ckpts.is_dir() and any(re.fullmatch(r"step_\d+\.pt", p.name) for p in ckpts.iterdir()):
        return True
    if {"student", "teacher", "train", "data"} <= _json_object(folder / "config.json").keys():
        return True
    log_name = re.compile(re.escape(folder.name) + r"_\d{8}_\d{6}_pid\d+\.log")
    return any(log_name.fullmatch(p.name) for p in folder.iterdir())


def _is_cache(folder: Path) -> bool:
    return (
        (folder / "cache.json").is_file()
        or (folder / "index.json").is_file()
        or any(folder.glob("shard_[0-9]*[0-9].safetensors"))
    )


def _is_export(folder: Path) -> bool:
    return _json_object(folder / "config.json").get("format") == "salt-encoder"


def _is_quickstart(folder: Path) -> bool:
    return (folder / "quickstart.json").is_file() or folder_kind(folder / "runs" / "teacher") == RUN


# Folders written before the lock file existed, by the files each kind always has.
_SIGNATURES = (
    (EXPORT, _is_export),
    (CACHE, _is_cache),
    (RUN, _is_run),
    (QUICKSTART, _is_quickstart),
)


def describe(folder: Path, kind: str | None) -> str:
    """What a refused folder holds, for the message."""
    if kind in WHAT:
        return f"is {WHAT[kind]}"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries(folder)]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"holds files salt did not write ({shown})"


def claim(folder: Path, kind: str, what: str, hint: str = "choose another") -> Path:
    """``folder``, created if absent, as one salt writes ``kind`` into: refused, with one
    line, when it is a file or holds another kind of output or files salt did not write.
    ``what`` names the folder as the user gave it (``--out``, ``the run folder``)."""
    folder = check_folder(Path(folder), what)
    found = folder_kind(folder)
    if found not in (EMPTY, kind):
        raise FolderRefused(
            f"{what} {str(folder)!r} {describe(folder, found)}; {WHAT[kind]} is written only "
            f"into a new or empty folder or over one of its own kind: {hint}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------- one writer


def _read_record(path: Path) -> dict:
    """The lock file's record (kind, and the holder while one holds it); {} if unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(_RECORD_BYTES * 4)
        data = json.loads(text.decode().strip() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def holder_text(record: dict) -> str:
    """``salt train, pid 4711 on host gpu-3, since 2026-12-05 14:02:11``."""
    started = record.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return (
        f"{record.get('command') or 'another salt process'}, pid {record.get('pid', '?')} on "
        f"host {record.get('host', '?')}{since}"
    )


def writer_of(folder: Path) -> dict | None:
    """The record of the process writing ``folder`` now (its heartbeat younger than
    :data:`STALE_S`), or None: nobody holds it, or its holder died without letting go."""
    record = _read_record(Path(folder) / LOCK)
    if "pid" not in record:
        return None
    age = time.time() - float(record.get("heartbeat") or 0)
    return record if age < STALE_S else None


def _alive(pid) -> bool:
    """Whether process ``pid`` of this host is running (and is not this process)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class WriterLock:
    """The exclusive right to write ``folder`` (of ``kind``), held by one process at a time
    until :meth:`release` or the process's death; see the module's docstring."""

    def __init__(self, folder: Path, kind: str, command: str, hint: str = ""):
        self.folder = Path(folder)
        self.kind = kind
        self.command = command
        self.hint = hint or "wait for it to end or stop it, or write to another folder"
        self._fd: int | None = None
        self._flocked = False  # the OS lock was taken (False where the filesystem has none)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._started = 0.0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock, or raise :class:`FolderLocked` naming its holder."""
        if self.held:
            return self
        path = self.folder / LOCK
        try:
            # Never through a symlink: the lock file is salt's own, written in place.
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:
            raise FolderLocked(f"cannot lock {self.folder} for writing ({err.strerror})") from None
        try:
            self._flocked = self._flock(fd)
            self._check_heartbeat(_read_record(path), self._flocked)
            self._fd, self._started = fd, time.time()
            self._write()
        except BaseException:
            self._fd = None
            os.close(fd)
            raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="salt-lock", daemon=True)
        self._beat.start()
        return self

    def _flock(self, fd: int) -> bool:
        """Take the OS lock; False where this filesystem (or OS) has none."""
        if fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            record = _read_record(self.folder / LOCK)
            raise FolderLocked(
                f"{self.folder} is being written by {holder_text(record)}; {self.hint}"
            ) from None
        except OSError as err:  # no lock support on this filesystem: the heartbeat guards it
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            log.warning("%s: no file locks on this filesystem (%s)", self.folder, err.strerror)
            return False

    def _check_heartbeat(self, record: dict, flocked: bool = True) -> None:
        """Refuse a holder on another host whose heartbeat is fresh: that host's ``flock``
        may not reach this one (a dead holder's heartbeat goes stale within STALE_S). On
        this host the kernel's lock has already decided - unless there is none, and then a
        holder whose process is still alive is refused the same way."""
        if "pid" not in record:
            return  # free
        if record.get("host") == socket.gethostname() and (
            flocked or not _alive(record.get("pid"))
        ):
            return  # this host's kernel says its holder is gone
        age = time.time() - float(record.get("heartbeat") or 0)
        if age < STALE_S:
            raise FolderLocked(
                f"{self.folder} is being written by {holder_text(record)} (heartbeat "
                f"{max(age, 0):.0f} s ago); {self.hint}; if that process is gone, start "
                f"again after {STALE_S - age:.0f} s"
            )
        log.warning(
            "%s: taking over the lock of %s, silent for %.0f s",
            self.folder,
            holder_text(record),
            age,
        )

    def _write(self, holder: bool = True) -> None:
        record = {"kind": self.kind, "format": "salt-lock"}
        if holder:
            record.update(
                command=self.command,
                pid=os.getpid(),
                host=socket.gethostname(),
                started=self._started,
                heartbeat=time.time(),
            )
        text = json.dumps(record).encode().ljust(_RECORD_BYTES) + b"\n"
        # One write at offset 0, always the same length: a reader never sees it half-done,
        # and the file keeps its inode (the lock belongs to it).
        os.pwrite(self._fd, text, 0)
        os.ftruncate(self._fd, len(text))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write()
            except (OSError, TypeError):  # released meanwhile, or the disk went away
                return

    def release(self) -> None:
        """Give the lock up; the file stays, naming the folder's kind and no holder."""
        if not self.held:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        try:
            self._write(holder=False)
        except OSError as err:
            log.warning("could not clear the lock of %s: %s", self.folder, err)
        finally:
            fd, self._fd = self._fd, None
            if self._flocked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------- replacement


def stage_beside(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write its replacement into (salt's temp name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
    os.chmod(stage, 0o777 & ~UMASK)  # mkdtemp's folders are owner-only
    return stage


def swap_in(stage: Path, out: Path) -> None:
    """Put the complete folder ``stage`` at ``out`` in one step; ``out``'s old contents end
    in ``stage`` (the caller removes it). Where the system cannot exchange two folders at
    once, ``out`` is absent for the moment between two renames."""
    if not out.exists():
        os.rename(stage, out)
        return
    if _exchange(stage, out):
        return
    old = stage.with_name(stage.name.removesuffix(".tmp") + "-old.tmp")
    os.rename(out, old)
    os.rename(stage, out)
    os.rename(old, stage)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # this filesystem cannot: fall back to two renames
    raise OSError(code, f"cannot replace {b}: {os.strerror(code)}")


def remove_stage(stage: Path) -> None:
    """Remove a staging folder this process made (and, after a swap, the old contents)."""
    shutil.rmtree(stage, ignore_errors=True)
