"""Files that are never half-written: atomic writes and JSON reads that name the file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


class UnreadableFileError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, damaged, or
    of another kind)."""


class WriteError(OSError):
    """A file could not be written (read-only folder, full disk, ...); nothing half-written
    is left behind."""


# Salt's temp files carry this tag (``.<name>.salt-XXXXXXXX.tmp``): the only files salt removes
# without being asked are ones with it, in folders salt owns.
TEMP_TAG = ".salt-"
TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """The start of a temp file's (or folder's) name for ``name``, beside it."""
    return f".{name}{TEMP_TAG}"


def is_salt_temp(name: str) -> bool:
    """Whether a file name is one of salt's temp files (left by an interrupted write)."""
    return name.startswith(".") and TEMP_TAG in name and name.endswith(TEMP_SUFFIX)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file.
    A failed write (full disk, read-only folder) removes its temp file and raises a
    :class:`WriteError` that names ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent
        )
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp's files are owner-only
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, RuntimeError) and "inline_container" not in str(err):
            raise  # not a write failure (torch.save reports a full disk as a RuntimeError)
        raise WriteError(
            getattr(err, "errno", None) or errno.EIO,
            f"cannot write {path}: {_reason(err, path.parent)}",
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def check_folder(path: Path, what: str) -> Path:
    """``path`` as a folder to write into: it, or its nearest existing parent, must be a
    folder (not a file)."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise FileExistsError(
                    f"{what} {str(path)!r}: {existing} is a file, not a folder; choose another"
                )
            return path
    return path


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in ``folder`` (a writer
    killed before its rename): salt's own by name, never another file; call it only while
    holding the folder's writer lock."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_TAG}*{TEMP_SUFFIX}"):
        if is_salt_temp(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it; done once, at import
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once: reading it sets it, which is not thread-safe


def _reason(err: BaseException, folder: Path) -> str:
    """Why a write failed, with the fix."""
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC or "inline_container" in str(err):
        try:
            free = shutil.disk_usage(folder).free / 1e9
            space = f", {free:.2f} GB free there"
        except OSError:
            space = ""
        return f"no space left on the device{space}; free some space or choose another folder"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{os.strerror(code)}; choose a folder you can write to"
    return first_line(err)


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    """Parse a JSON file; a damaged one is a ValueError that names it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableFileError(f"{path} is not valid JSON ({err}); it may be damaged") from None


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file; a truncated or damaged one names itself."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise UnreadableFileError(
            f"{path} is not a readable safetensors file ({first_line(err)}); it is truncated or "
            f"damaged - write it again (export, save_pretrained or convert it)"
        ) from None


def torch_load(path: Path, map_location="cpu", safe_globals: tuple = ()):
    """``torch.load(weights_only=True)``: tensors and plain containers only, nothing unpickled.
    A file that holds anything else, or is truncated, is a one-line error that names it (and
    the unsafe global it would have called)."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" + (" (a folder)" if path.is_dir() else ""))
    try:
        with torch.serialization.safe_globals(list(safe_globals)), warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        allowed = {f"{g.__module__}.{g.__name__}" for g in safe_globals}
        unsafe = _unsafe_global(path, allowed) or _refused_global(str(err))
        what = f"the unsafe global {unsafe}" if unsafe else first_line(err)
        raise UnreadableFileError(
            f"{path} was not loaded: it holds more than tensors ({what}) and nothing in it was "
            f"run; salt reads only plain weights - re-save the state dict alone "
            f"(torch.save(model.state_dict(), ...)) or convert it to safetensors"
        ) from None
    except Exception as err:  # truncated, not a torch file at all: torch raises many kinds
        raise UnreadableFileError(
            f"{path} is not a readable torch file ({_kind_and_line(err)}); "
            f"it may be truncated or of another kind - write it again"
        ) from None


def _unsafe_global(path: Path, allowed: set[str]) -> str | None:
    """The first global (``module.name``) a pickle - a plain one, or a ``torch.save`` zip's
    ``data.pkl`` - would import that a weights file never needs; None when it names none
    (or cannot be read). Read with ``pickletools``: nothing is imported or run."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        pushed: list[str | None] = []  # per push: the string pushed, None for anything else
        memo: dict[int, str | None] = {}
        for op, arg, _ in pickletools.genops(data):
            if op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
                continue
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = pushed[-1] if pushed else None
                continue
            if op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
                continue
            found = None
            if op.name in ("GLOBAL", "INST"):
                found = _python3_name(*str(arg).split(" ", 1))
            elif op.name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                found = _python3_name(pushed[-2], pushed[-1])
            if found and not _weights_global(found, allowed):
                return found
            text = "UNICODE" in op.name or op.name.endswith("STRING")
            pushed.append(arg if text and isinstance(arg, str) else None)
    except Exception:  # noqa: BLE001 - a damaged pickle: torch's own reason is shown instead
        return None
    return None


def _python3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 spells it (protocol 2 pickles write ``__builtin__.eval``)."""
    import _compat_pickle

    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _weights_global(name: str, allowed: set[str]) -> bool:
    """Whether a pickle global is one that torch's weights-only reader allows (or the
    caller allowed): tensors, storages, dtypes, ordered dicts."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        known = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a torch without that table: torch's own names
        known = {"collections.OrderedDict"}
    return name in known or name in allowed or name.startswith("torch._utils._rebuild")


def _refused_global(message: str) -> str | None:
    """The global torch's weights-only reader refused, from its message."""
    import re

    found = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    return found.group(1) if found else None


def _kind_and_line(err: BaseException) -> str:
    line, kind = first_line(err), type(err).__name__
    return kind if line in (kind, "") else f"{kind}: {line}"


def first_line(err: BaseException) -> str:
    """The line of an error message that says what went wrong (at most 200 characters); a
    weights-only refusal says which global it refused, never how to turn the check off."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch buries the reason under advice
        unsafe = _refused_global(text)
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        reason = reason[0].split(". Please", 1)[0] if reason else "unknown content"
        what = f"the unsafe global {unsafe}" if unsafe else reason
        text = f"it holds more than tensors ({what}); it was not loaded"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(err).__name__
