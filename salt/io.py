"""Files that are never half-written: atomic writes and JSON reads that name the file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def read_json(path: Path) -> Any:
    """Parse a JSON file; a damaged one is a ValueError that names it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it may be damaged") from None
