"""The memory plan of ``salt train --dry-run``: sizes, the largest batch, and the plan
against a measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salt.cli import main
from salt.memory import CUDA_OVERHEAD, FRAGMENTATION, GIB, MemoryPlan, parse_size


@pytest.mark.parametrize(
    "text,gib", [("80GB", 80), ("80G", 80), ("141GiB", 141), ("24", 24), ("512MB", 0.5)]
)
def test_sizes_read_as_datasheets_write_them(text, gib):
    assert parse_size(text) == int(gib * GIB)


@pytest.mark.parametrize("text", ["eighty", "80 apples", "0GB", ""])
def test_a_size_that_is_not_one_is_a_clear_error(text):
    with pytest.raises(ValueError, match="--gpu-memory"):
        parse_size(text)


def test_the_largest_batch_is_the_last_that_fits():
    plan = MemoryPlan(
        batch=8,
        fixed={"weights": 3 * GIB},
        per_clip=0.7 * GIB,
        per_clip_checkpointed=0.1 * GIB,
        recompute=0.02 * GIB,
        checkpointing=False,
    )
    memory = 24 * GIB
    usable = (memory - CUDA_OVERHEAD) * FRAGMENTATION
    for ckpt in (False, True):
        b = plan.largest_batch(memory, ckpt)
        assert plan.total(b, ckpt) <= usable < plan.total(b + 1, ckpt)
    assert plan.largest_batch(memory, True) > 5 * plan.largest_batch(memory, False)
    assert plan.largest_batch(2 * GIB, False) == 0
    text = "\n".join(plan.lines(memory))
    assert "batch 8 fits; largest batch per GPU 26 " in text  # (22.5 x 0.95 - 3) / 0.7
    assert "grad_checkpointing=true: " in text


def test_the_plan_is_within_20_percent_of_the_measured_peak(tmp_path):
    """vit_small at 8x112 (196 tokens), a 6-block predictor, batch 8, fp32 on the CPU: the
    planned bytes against the peak resident memory a fresh process adds over two steps."""
    overrides = {
        "student.name": "vit_small",
        "teacher.spec": "pixels",
        "data.spec": "synthetic:16",
        "data.num_frames": 8,
        "data.image_size": 112,
        "data.num_workers": 0,
        "predictor.width": 384,
        "predictor.depth": 6,
        "predictor.heads": 6,
        "train.batch_size": 8,
        "train.steps": 2,
        "train.device": "cpu",
        "train.precision": "fp32",
        "train.peak_tflops": 1.0,
        "train.progress": False,
        "run.out": str(tmp_path / "runs"),
        "run.name": "memory",
    }
    script = Path(__file__).parent / "measure_memory.py"
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = result["measured"] / result["planned"]
    assert 0.8 <= ratio <= 1.2, result
    assert result["planned"] > 0.8 * GIB  # big enough that the model, not the runtime, counts


def test_dry_run_prints_the_plan_for_a_gpu(tiny_overrides, capsys):
    args = ["train", "--dry-run", "--gpu-memory", "24GB"]
    for key, value in tiny_overrides.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "memory per process at batch 4:" in out and "AdamW moments" in out
    assert "on a 24 GiB GPU: batch 4 fits; largest batch per GPU" in out
    assert main([*args[:1], "--gpu-memory", "24GB"]) == 2
    assert "add --dry-run" in capsys.readouterr().err
