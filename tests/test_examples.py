"""The scripts in examples/ run end to end at a tiny scale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("layout", ["v2.1", "v3.0"])
def test_lerobot_policy_runs_on_both_layouts_make_lerobot_writes(tmp_path, layout):
    import torch

    from salt import VideoEncoder

    dataset = tmp_path / "ds"
    run_example(
        "make_lerobot.py", str(dataset), "--layout", layout, "--episodes", "4", "--size", "32"
    )
    assert sorted(dataset.glob("data/**/*.parquet"))  # the frame tables hold the actions
    torch.manual_seed(0)
    config = {
        "architecture": "vit_tiny",
        "num_frames": 4,
        "image_size": 32,
        "patch_size": 16,
        "tubelet_size": 2,
        "frame_step": 2,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    encoder = VideoEncoder.from_config(config).save_pretrained(tmp_path / "encoder")
    out = run_example("lerobot_policy.py", str(dataset), str(encoder), "--epochs", "2")
    assert re.search(r"^epoch 2: behaviour-cloning mse \d+\.\d{4}$", out, re.MULTILINE), out
    assert re.search(r"^select_action on one history: \[-?\d", out, re.MULTILINE), out
