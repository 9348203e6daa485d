"""benchmarks/stage_speed.py at its --smoke size: the script behind the compile and batch
rows of docs/results.md runs anywhere and prints its row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "stage_speed.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )


def test_the_smoke_size_prints_its_speed_after_the_first_epoch():
    proc = run("--batch-size", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = re.findall(r"^\| eager \| batch 4 \| 1 thread\(s\) \| .*\|$", proc.stdout, re.M)
    median, low, high = map(
        float, re.search(r"([\d.]+) clips/s \(windows ([\d.]+)-([\d.]+)\)", row).groups()
    )
    assert 0 < low <= median <= high
    assert "| 8 steps in " in row  # 32 clips seen, 4 a step


def test_too_few_clips_for_a_window_after_the_first_epoch_is_said():
    proc = run("--clips-seen", "8")
    assert proc.returncode == 1
    assert "no logged window after the first epoch: raise --clips-seen" in proc.stderr
