"""benchmarks/gpu_bench.py at its --smoke size: the GPU table's script runs anywhere, so it
is ready (and known to work) when a GPU machine is available."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench.py"


def test_the_gpu_benchmark_prints_its_table_at_smoke_size():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        m.group(1).strip(): m.group(2)
        for m in re.finditer(r"^\| (.+?) \| (.+) \|$", proc.stdout, re.M)
    }
    steps = [k for k in rows if k.startswith("step, ")]
    assert len(steps) == 2 and all("clips/s" in rows[k] and "MFU" in rows[k] for k in steps)
    assert "compile" in rows[steps[1]] and "failed" not in rows[steps[1]]
    assert any(k.startswith("memory") for k in rows)
    reads = [v for k, v in rows.items() if k.startswith("cached latents")]
    assert len(reads) == 2 and all("GB/s" in v for v in reads)
    decode = [v for k, v in rows.items() if k.startswith("decode")]
    assert len(decode) == 1 and float(decode[0].split()[0]) > 0


def test_without_a_gpu_the_full_size_says_to_use_smoke():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "run with --smoke" in proc.stderr
