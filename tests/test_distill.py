"""salt eval distill (salt/eval/distill.py): held-out masked-latent loss of a trained pair."""

from __future__ import annotations

import json

import pytest
import torch

from salt.cli import main
from salt.eval.distill import distill_loss
from salt.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import TINY

    from salt.config import build_config

    out = tmp_path_factory.mktemp("eval")
    cfg = build_config(overrides={**TINY, "run.out": str(out), "run.name": "r", "train.steps": 12})
    return train(cfg).run_dir, cfg


def test_distill_reports_loss_terms_power_and_ratio(run):
    run_dir, cfg = run
    report = distill_loss(run_dir, batches=3, seed=4)
    assert (report.step, report.teacher, report.data, report.clips, report.batches) == (
        12,
        "pixels",
        "synthetic:64",
        12,
        3,
    )
    assert set(report.terms) == {"mse"} and report.terms["mse"] == pytest.approx(report.loss)
    # Per-patch normalized pixels: each target row has mean 0 and unbiased variance 1.
    n = 3 * 2 * 16 * 16
    assert report.target_power == pytest.approx((n - 1) / n, rel=1e-3)
    assert report.ratio == pytest.approx(report.loss / report.target_power)
    assert 0 < report.ratio < 1.5
    again = distill_loss(run_dir, batches=3, seed=4)
    assert again.loss == report.loss  # seeded masks and fixed clips
    assert distill_loss(run_dir, batches=3, seed=5).loss != report.loss


def test_flags_win_over_the_checkpoint_and_are_reported(run):
    run_dir, _ = run
    report = distill_loss(
        run_dir,
        {"data.spec": "synthetic:6", "train.batch_size": 2, "loss.name": "mse+vicreg"},
        batches=5,
    )
    assert report.data == "synthetic:6" and report.clips == 6 and report.batches == 3
    assert set(report.terms) == {"mse", "vicreg_var", "vicreg_cov"}
    assert report.overridden["data.spec"] == ["synthetic:64", "synthetic:6"]
    assert report.loss == pytest.approx(sum(report.terms.values()), rel=1e-5)


def test_held_out_power_is_that_of_the_normalized_targets(run):
    """With loss.target_norm the loss compares against standardized latents, so the ratio's
    denominator is their power: 1 for "layer" (every token's channels have variance 1; the
    pixel teacher's own targets have the unbiased variance 1, so (n - 1) / n)."""
    run_dir, _ = run
    plain = distill_loss(run_dir, batches=2, seed=4)
    layer = distill_loss(run_dir, {"loss.target_norm": "layer"}, batches=2, seed=4)
    assert layer.overridden["loss.target_norm"] == ["none", "layer"]
    assert layer.target_power == pytest.approx(1.0, rel=1e-5)
    assert plain.target_power != pytest.approx(1.0, rel=1e-5)
    assert layer.loss != plain.loss
    assert layer.ratio == pytest.approx(layer.loss / layer.target_power)


def test_a_teacher_of_another_width_is_a_clear_error(run):
    run_dir, _ = run
    with pytest.raises(ValueError, match="trained to predict teacher 'pixels'.*192-dim latents"):
        distill_loss(run_dir, {"teacher.spec": "random:vit_tiny"})


def test_eval_distill_command_prints_a_table_and_json(run, capsys):
    run_dir, _ = run
    assert main(["eval", "distill", str(run_dir), "--batches", "2"]) == 0
    table = capsys.readouterr().out
    assert "loss / E[x^2]" in table and "teacher E[x^2]" in table and "  mse" in table
    assert (
        main(["eval", "distill", str(run_dir), "--batches", "2", "--json", "--teacher", "pixels"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert (
        data["ratio"] == pytest.approx(data["loss"] / data["target_power"]) and data["clips"] == 8
    )


def test_eval_probes_command_runs_the_suite_with_a_random_baseline(run, capsys):
    run_dir, _ = run
    args = [
        "eval",
        "probes",
        str(run_dir),
        "--baseline",
        "random",
        "--videos",
        "8",
        "--no-progress",
    ]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"encoder", "random"}
    tasks = {"time-arrow", "motion-static", "temporal-shuffle", "stride", "clip-consistency"}
    for report in data.values():
        accuracies = {name: t["accuracy"] for name, t in report["tasks"].items()}
        assert set(accuracies) == tasks and all(0.0 <= a <= 1.0 for a in accuracies.values())
    # The same seed gives the same numbers, so the table can be checked against the JSON.
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "chance" in table and "encoder" in table and "random" in table
    first = data["encoder"]["tasks"]["time-arrow"]["accuracy"]
    assert f"{first:.3f}" in next(
        line for line in table.splitlines() if line.startswith("time-arrow")
    )


def test_motion_pixel_targets_are_frame_changes():
    """pixels:motion: each tubelet's change from the frame before - zero where nothing moves,
    the moved pixels where something does; frame 0 takes the first change."""
    from salt.config import build_config
    from salt.registry import teachers

    geometry = build_config(
        overrides={"data.num_frames": 4, "data.image_size": 32, "student.patch_size": 16}
    ).geometry
    teacher = teachers.create("pixels:motion", geometry=geometry)
    video = torch.full((1, 3, 4, 32, 32), 0.5)
    video[:, :, 2:, :4, :4] = 2.0  # a square appears at frame 2 in the top-left patch
    targets = teacher(video)  # [1, 2 tubelets * 2 * 2 patches, 3 * 2 * 16 * 16]
    assert targets.shape == (1, 8, 1536) and teacher.teacher_dim == 1536
    assert targets[0, :4].abs().max() == 0  # tubelet 0: frames 0-1, nothing changes
    changed = targets[0, 4].reshape(2, 16, 16, 3)  # tubelet 1, top-left patch: (t, h, w, c)
    assert torch.all(changed[0, :4, :4] == 1.5) and torch.all(changed[1] == 0)
    assert changed.abs().sum() == 1.5 * 16 * 3 and targets[0, 5:].abs().max() == 0
    assert torch.equal(teacher(video + 1.0), targets)  # brightness alone is no motion
    with pytest.raises(ValueError, match="pixels:motion"):
        teachers.create("pixels:flow", geometry=geometry)
