"""One progress adapter: a ``advance(what, done, total)`` callback driving a tqdm bar."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(desc: str, label: str, show: bool, **tqdm_options):
    """A callback ``advance(what, done, total)`` that drives a tqdm bar (none when not
    ``show``), the bar's postfix naming ``what`` under ``label``."""
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(desc=desc, dynamic_ncols=True, **tqdm_options)

    def advance(what, done, total):
        if bar is not None:
            bar.total, bar.n = total, done
            bar.set_postfix({label: what})
            bar.refresh()

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
