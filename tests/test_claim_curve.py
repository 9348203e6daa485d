"""benchmarks/claim_curve.py at its --smoke size: the script that measures SALT's claim
against the budget on a GPU runs anywhere, so it is ready when a GPU machine is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "claim_curve.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_one_budget_gives_a_row_a_json_line_and_a_plot(tmp_path):
    out = tmp_path / "curve"
    args = [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--budgets", "1"]
    proc = subprocess.run(
        [*args, "--out", str(out)], capture_output=True, text=True, timeout=600, env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (point,) = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert point["steps"] == 1 and point["out"] == str(out / "steps_1")
    assert (point["teacher_steps"], point["seed"]) == (1, 0)
    assert point["reached"] == (
        point["student_vs_teacher"] >= 3 and point["teacher_vs_random"] >= 3
    )
    for model in ("student", "teacher", "random"):
        assert 0 <= point[model]["mean"] <= 1 and point[model]["stderr"] >= 0
    # The same numbers as the quick start's own report in that folder.
    report = json.loads((out / "steps_1" / "quickstart.json").read_text())
    assert report["claim"]["student_vs_teacher"] == point["student_vs_teacher"]
    assert report["classify"]["teacher"]["scores"]["attentive"]["mean"] == point["teacher"]["mean"]
    (row,) = re.findall(r"^\| 1 \|.*\|$", proc.stdout, re.M)
    assert f"{point['student']['mean']:.3f} +- " in row and "reached" in row
    with Image.open(out / "curve.png") as image:
        assert image.format == "PNG"


def refused(tmp_path, *flags: str) -> str:
    """Run the script with ``flags``; it must refuse (exit 2) without writing --out."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *flags, "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert proc.returncode == 2
    assert not (tmp_path / "c").exists()
    return proc.stderr


def test_without_a_gpu_the_default_budgets_are_refused(tmp_path):
    stderr = refused(tmp_path, "--device", "cpu")
    assert "--smoke" in stderr and "--budgets" in stderr


def test_one_size_at_a_time(tmp_path):
    stderr = refused(tmp_path, "--long", "--smoke")
    assert "--smoke: not allowed with argument --long" in stderr


def test_a_budget_scales_the_teacher_with_the_student_who_keeps_its_warmup():
    """Budget N: the student's steps; the teacher's steps and warmup keep the preset's
    shares (the recipe's 4000 + 9000 steps, a 400-step warmup), or --teacher-steps holds the
    teacher; the student keeps the recipe's 1200 warmup steps, which it needs to leave its
    plateau."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from claim_curve import LONG, scaled
    finally:
        sys.path.remove(str(SCRIPT.parent))
    half = scaled(LONG, 4500, seed=2)
    assert (half.teacher_steps, half.student_steps, half.seed) == (2000, 4500, 2)
    assert (half.teacher_warmup, half.student_warmup) == (200, 1200)
    held = scaled(LONG, 6000, seed=0, teacher_steps=4000)
    assert (held.teacher_steps, held.student_steps) == (4000, 6000)
    assert (held.teacher_warmup, held.student_warmup) == (400, 1200)
    assert scaled(LONG, LONG.student_steps, seed=0) == LONG


def test_the_teacher_steps_must_be_positive(tmp_path):
    stderr = refused(tmp_path, "--long", "--teacher-steps", "0")
    assert "--teacher-steps" in stderr
