"""``salt runs``: the runs under a folder side by side - the table a pretraining A/B (10
epochs against 20, schedule A against B) is read from.

A row comes from the run's ``summary.json`` when the run has ended (or stopped) since it
last logged; a run still going, or one that was killed, is summarized from its
``metrics.jsonl``. Nothing else is read, and torch is not imported: a hundred finished runs
answer in milliseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import attrs

from salt.folders import holder_text, writer_of
from salt.metrics import read_records, read_series, summarize

SUMMARY, METRICS, CONFIG = "summary.json", "metrics.jsonl", "config.json"
EVALUATIONS = "evaluations.json"  # what `salt eval classify RUN --record` measured


@attrs.frozen
class RunRow:
    """One run's line: how far it got, its losses, its best checkpoint and its speed."""

    run: str
    path: str
    status: str  # done, stopped (SIGTERM), running (pid ...), unfinished
    step: int
    total_steps: int | None
    epochs: float | None
    min_loss: float | None
    min_loss_step: int | None
    last_loss: float | None
    rebound: float | None
    late_rebound: bool | None
    best_val_loss: float | None  # the lowest held-out loss (checkpoints/best.pt)
    best_step: int | None
    train_seconds: float | None
    clips_per_s: float | None
    probe_top1: float | None = None  # the newest recorded probe top-1 (eval classify --record)
    probe_step: int | None = None  # the checkpoint it scored
    probe: str = ""  # which probe, on which data

    def to_dict(self) -> dict:
        return attrs.asdict(self)


SORT_KEYS = tuple(f.name for f in attrs.fields(RunRow) if f.name != "path")


def is_run(folder: Path) -> bool:
    """A folder a run wrote: it has ``metrics.jsonl`` or ``summary.json``."""
    return (folder / METRICS).is_file() or (folder / SUMMARY).is_file()


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """The runs named: each path is a run folder, or a folder whose sub-folders are runs."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{str(given)!r} is not a folder; give run folders or a folder of runs"
            )
        if is_run(path):
            found.append(path)
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and is_run(p))
        if not children:
            raise FileNotFoundError(
                f"{str(given)!r} is neither a run (no {METRICS} or {SUMMARY}) nor a folder of runs"
            )
        found += children
    return list(dict.fromkeys(found))


def read_run(run: Path) -> RunRow:
    """The row of one run folder."""
    summary = _fresh_summary(run)
    if summary is not None:
        stopped = summary.get("stopped_by")
        status = f"stopped ({stopped})" if stopped else "done"
    else:
        records = read_records(run / METRICS) if (run / METRICS).is_file() else []
        summary = summarize(records)
        trained = [r for r in records if "loss" in r]
        summary["step"] = trained[-1]["step"] if trained else 0
        summary["total_steps"] = _planned_steps(run)
        if "min_val_loss" in summary:
            summary["best_val_loss"] = summary["min_val_loss"]
            summary["best_step"] = summary["min_val_step"]
        writer = writer_of(run)
        status = f"running ({holder_text(writer)})" if writer else "unfinished"
    return RunRow(
        run=run.name,
        path=str(run),
        status=status,
        step=int(summary.get("step") or 0),
        total_steps=summary.get("total_steps"),
        epochs=summary.get("epochs"),
        min_loss=summary.get("min_loss"),
        min_loss_step=summary.get("min_loss_step"),
        last_loss=summary.get("last_loss"),
        rebound=summary.get("rebound"),
        late_rebound=summary.get("late_rebound"),
        best_val_loss=summary.get("best_val_loss"),
        best_step=summary.get("best_step"),
        train_seconds=summary.get("train_seconds"),
        clips_per_s=summary.get("clips_per_s"),
        **recorded_probe(run),
    )


def recorded_probe(run: Path) -> dict:
    """The newest probe top-1 recorded into a run (attentive first: V-JEPA's number)."""
    path = run / EVALUATIONS
    if not path.is_file():
        return {}
    try:
        entries = [e for e in json.loads(path.read_text()) if e.get("metric") == "accuracy"]
    except (ValueError, AttributeError, TypeError):
        return {}  # an unreadable record is not a reason to hide the run
    if not entries:
        return {}
    newest = max(e.get("recorded_at", "") for e in entries)
    latest = [e for e in entries if e.get("recorded_at", "") == newest]
    chosen = next((e for e in latest if "attentive" in e.get("name", "")), latest[0])
    probe = chosen.get("name", "").removeprefix("top-1, ").removesuffix(" (frozen)")
    return {
        "probe_top1": chosen["value"],
        "probe_step": chosen.get("step"),
        "probe": f"{probe}, {chosen.get('dataset', '?')}",
    }


def record_run_evaluation(run: Path, entries: list[dict]) -> Path:
    """Add evaluations of a run's checkpoint to ``RUN/evaluations.json`` (atomically): an
    entry for the same task, data, metric and step replaces the older one."""
    from salt.io import write_json

    path = Path(run) / EVALUATIONS
    old = json.loads(path.read_text()) if path.is_file() else []

    def key(e: dict) -> tuple:
        return e["task"], e["dataset"], e["metric"], e.get("name"), e.get("step")

    new = {key(e) for e in entries}
    write_json(path, [e for e in old if key(e) not in new] + entries)
    return path


def _fresh_summary(run: Path) -> dict | None:
    """``summary.json`` if it is as new as the metrics (a run resumed since has not ended)."""
    path = run / SUMMARY
    if not path.is_file():
        return None
    metrics = run / METRICS
    if metrics.is_file() and metrics.stat().st_mtime > path.stat().st_mtime:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # torn or foreign: the metrics say the same
    return data if isinstance(data, dict) else None


def _planned_steps(run: Path) -> int | None:
    """``train.steps`` from the run's config, when the run is sized in steps."""
    try:
        train = json.loads((run / CONFIG).read_text())["train"]
        return int(train["steps"]) if not train.get("epochs") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_runs(
    paths: Iterable[str | Path], sort: str = "run", reverse: bool = False
) -> list[RunRow]:
    """Rows for the runs under ``paths``, sorted by ``sort`` (a :data:`SORT_KEYS` name),
    descending with ``reverse``. Runs without the value sort last either way."""
    if sort not in SORT_KEYS:
        raise ValueError(f"--sort {sort!r}: choose one of {', '.join(SORT_KEYS)}")
    rows = [read_run(run) for run in find_runs(paths)]
    present = [r for r in rows if getattr(r, sort) is not None]
    present.sort(key=lambda r: getattr(r, sort), reverse=reverse)
    return present + [r for r in rows if getattr(r, sort) is None]


def _number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _at(value, step) -> str:
    if value is None:
        return "-"
    return _number(value) + (f" @{step}" if step is not None else "")


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


HEADERS = (
    "run",
    "status",
    "step",
    "epochs",
    "min loss",
    "last loss",
    "rebound",
    "best held-out",
    "probe top-1",
    "train time",
    "clips/s",
)


def table(rows: list[RunRow]) -> str:
    """The rows as aligned text, one line per run under a header."""
    lines = [HEADERS]
    for r in rows:
        rebound = (
            "-" if r.rebound is None else f"{r.rebound:+.1%}" + (" late" if r.late_rebound else "")
        )
        lines.append(
            (
                r.run,
                r.status,
                f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step),
                _number(r.epochs, 2),
                _at(r.min_loss, r.min_loss_step),
                _number(r.last_loss),
                rebound,
                _at(r.best_val_loss, r.best_step),
                _at(r.probe_top1, r.probe_step),
                _duration(r.train_seconds),
                _number(r.clips_per_s, 1),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def metrics_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``metrics.jsonl`` of each run named: a run folder, a folder of runs (each of its
    runs, as ``salt runs`` lists them) or the file itself."""
    named = [
        r
        for given in paths
        for r in (
            find_runs([given]) if Path(given).is_dir() and not is_run(Path(given)) else [given]
        )
    ]
    files = []
    for run in named:
        path = Path(run) / METRICS if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(
                f"{run}: no {METRICS} (give run directories, or their {METRICS} files)"
            )
        files.append(path)
    return files


def epochs_per_step(run: Path) -> float:
    """Passes over the run's training clips per optimizer step: ``epochs / step`` from its
    ``summary.json`` (written when a run ends or is stopped)."""
    try:
        summary = json.loads((run / SUMMARY).read_text())
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    epochs, step = summary.get("epochs"), summary.get("step")
    if not (_positive(epochs) and _positive(step)):
        raise ValueError(
            f"{run}: no {SUMMARY} with the epochs done (a run writes it when it ends or is "
            f"stopped), so its steps cannot be put in epochs; draw it against steps (--x step)"
        )
    return epochs / step


def _positive(value) -> bool:
    """A real number above zero (not a bool, not inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def read_curves(
    files: Iterable[Path], keys: Iterable[str], x: str = "step"
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{run: {key: [(x, value)]}}`` of ``metrics.jsonl`` files (:func:`metrics_files`), each
    named by its run folder (its path when two share a name). With ``x`` ``"epoch"`` a run's
    steps become passes over its training clips (:func:`epochs_per_step`), so runs with
    other batch sizes or data line up."""
    if x not in ("step", "epoch"):
        raise ValueError(f"x axis {x!r}: choose step or epoch")
    keys = list(keys)
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for path in files:
        name = path.parent.name if path.parent.name not in curves else str(path.parent)
        series = read_series(path, keys=keys)
        if x == "epoch" and series:
            per_step = epochs_per_step(path.parent)
            series = {k: [(s * per_step, v) for s, v in pts] for k, pts in series.items()}
        curves[name] = series
    return curves
