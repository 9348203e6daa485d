"""The scripts in examples/ run end to end at a tiny scale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--clips", "16", "--test-clips", "8", "--frames", "4", "--size", "32", "--epochs", "2"]
ROW = r"{name}\s+(\d\.\d{{3}})\s+(\d\.\d{{3}})\s*$"


def run_example(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def accuracies(output: str, name: str) -> tuple[float, float]:
    match = re.search(ROW.format(name=re.escape(name)), output, re.MULTILINE)
    assert match, f"no {name!r} row in:\n{output}"
    train, test = float(match.group(1)), float(match.group(2))
    assert 0.0 <= train <= 1.0 and 0.0 <= test <= 1.0
    return train, test


def test_vla_policy_pretrains_an_encoder_then_reuses_it(tmp_path):
    out = run_example("vla_policy.py", "--steps", "2", "--workdir", str(tmp_path), *TINY)
    encoder = tmp_path / "encoder"
    assert (encoder / "config.json").is_file() and (encoder / "model.safetensors").is_file()
    assert f"reuse it with --encoder {encoder}" in out
    accuracies(out, "trained (demo)")
    accuracies(out, "random init, same architecture")
    assert re.search(r"^chance\s+0\.125\s+0\.125", out, re.MULTILINE)

    out = run_example("vla_policy.py", "--encoder", str(encoder), *TINY)
    assert "training a tiny" not in out
    accuracies(out, f"trained ({encoder})")
    accuracies(out, "random init, same architecture")
