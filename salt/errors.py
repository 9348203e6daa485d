"""One line for an error, as the ``salt`` command prints it and the viewer shows it."""

from __future__ import annotations

# Errors whose message is written for the user: printed as they are.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, RuntimeError, TypeError)


def message_of(err: BaseException) -> str:
    """The error's own words: a KeyError's message unquoted, an OSError's file named, and
    an error re-raised from a DataLoader worker as the worker's last line."""
    if isinstance(err, KeyError) and err.args:
        message = str(err.args[0])
    elif isinstance(err, OSError) and err.filename and str(err.filename) not in str(err):
        message = f"{err.filename}: {err.strerror or err}"
    else:
        message = str(err)
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line
        message = message.strip().splitlines()[-1]
        kind, sep, rest = message.partition(": ")
        message = rest if sep and kind.replace(".", "").replace("_", "").isalnum() else message
    return message


def error_line(err: BaseException) -> str:
    """One line for an error: its message when it is one of ours, else its kind and first
    line with where to see more."""
    message = message_of(err)
    lines = [line for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if isinstance(err, USER_ERRORS + (OSError,)) and len(lines) <= 1:
        return first
    return f"{type(err).__name__}: {first} (run with -v for the full traceback)"
