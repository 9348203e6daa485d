"""How long ``salt runs`` takes over 100 finished runs of 10,000 logged steps each.

Target from the issue: under a second - it reads each run's ``summary.json``, never its
metrics. For scale, the same table built from the metrics (what a run that has not ended
costs) is timed over 10 of the runs.
"""

from __future__ import annotations

import json

import pytest

from salt.metrics import summarize
from salt.runs import read_run, read_runs

RUNS, STEPS = 100, 10_000


def write_runs(root, runs: int, steps: int) -> None:
    line = {"lr": 1e-4, "wd": 0.04, "grad_norm": 1.0, "window_s": 2.0, "clips_per_s": 12.0}
    for r in range(runs):
        run = root / f"run{r:03d}"
        run.mkdir(parents=True)
        records = [{"step": s, "loss": 1.0 / s + r * 1e-3, **line} for s in range(1, steps + 1)]
        text = "".join(json.dumps(record) + "\n" for record in records)
        (run / "metrics.jsonl").write_text(text)
        summary = summarize(records)
        summary.update({"step": steps, "total_steps": steps, "stopped_by": None, "epochs": 2.0})
        (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def hundred_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_runs(root, RUNS, STEPS)
    return root


@pytest.mark.benchmark(group="runs", min_rounds=5)
def test_runs_table_over_100_finished_runs(benchmark, summary, seconds_per_call, hundred_runs):
    rows = benchmark(read_runs, [hundred_runs], "min_loss")
    assert len(rows) == RUNS and rows[0].run == "run000" and rows[0].step == STEPS
    assert all(r.status == "done" for r in rows)
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["seconds"] = times[0]
        summary(f"{RUNS} runs x {STEPS} steps: {1e3 * times[0]:.1f} ms (from summaries)")


@pytest.mark.benchmark(group="runs", min_rounds=1)
def test_runs_table_from_metrics(benchmark, summary, seconds_per_call, hundred_runs):
    runs = sorted(hundred_runs.iterdir())[:10]
    for run in runs:
        (run / "summary.json").unlink()  # as a run still going has none
    rows = benchmark.pedantic(lambda: [read_run(run) for run in runs], rounds=2)
    assert all(r.status == "unfinished" and r.step == STEPS for r in rows)
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["seconds_per_run"] = times[0] / len(runs)
        summary(f"one run of {STEPS} steps without a summary: {1e3 * times[0] / len(runs):.0f} ms")
