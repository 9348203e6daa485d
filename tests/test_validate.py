"""Validation while training: the held-out loss every ``train.eval_every`` steps, the best
checkpoint it picks, and how both survive a resume, a cache, videos and DDP."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from test_train import train_on_two_ranks
from videos import write_video

import salt.cache.build as cache_build
from salt.checkpoints import load_checkpoint, read_best, resolve_checkpoint, resume_state
from salt.cli import main
from salt.config import apply_overrides, build_config
from salt.eval.distill import distill_loss
from salt.export import export_encoder, load_encoder
from salt.metrics import read_records, summarize
from salt.models import teacher_of
from salt.train import config_from_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
EVAL = {"train.eval_every": 4, "train.eval_batches": 2}


def records(run: Path) -> list[dict]:
    return read_records(run / "metrics.jsonl")


def held_out(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["val_loss"]) for r in records(run) if "val_loss" in r]


def trained(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records(run) if "loss" in r]


@pytest.fixture
def evaluated(tiny_config):
    """An 8-step run measured at steps 4 and 8."""
    return train(apply_overrides(tiny_config, EVAL))


def test_the_held_out_loss_is_logged_and_is_salt_eval_distills(evaluated, one_thread):
    run = evaluated.run_dir
    points = held_out(run)
    assert [s for s, _ in points] == [4, 8]
    record = next(r for r in records(run) if "val_loss" in r)
    assert record["val_clips"] == 2 * 4  # eval_batches x batch_size, every time
    assert record["val_loss/mse"] == pytest.approx(record["val_loss"])
    # The same number `salt eval distill` gives that checkpoint on the same clips and masks.
    for step, value in points:
        report = distill_loss(run / "checkpoints" / f"step_{step:08d}.pt", batches=2, seed=0)
        assert report.loss == pytest.approx(value, rel=1e-5)
        assert report.clips == 8


def test_the_lowest_held_out_loss_is_kept_as_best(evaluated):
    run = evaluated.run_dir
    step, loss = min(held_out(run), key=lambda p: p[1])
    assert read_best(run) == (step, pytest.approx(loss))
    best = load_checkpoint(resolve_checkpoint(f"{run}:best"))
    assert "optimizer" not in best and best["val_loss"] == pytest.approx(loss)
    same = load_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt")
    for key, value in same["student"].items():
        assert torch.equal(value, best["student"][key]), key
    s = evaluated.summary
    assert (s["best_step"], s["best_val_loss"]) == (step, pytest.approx(loss))
    assert (s["min_val_step"], s["val_points"], s["rebound_on"]) == (step, 2, "val_loss")
    assert s == json.loads((run / "summary.json").read_text())


def test_validation_leaves_the_training_steps_unchanged(tiny_config, tmp_path):
    # Drop path draws from the RNG every step: reading or scoring held-out clips must not.
    cfg = apply_overrides(tiny_config, {"student.drop_path": 0.1})
    plain = train(apply_overrides(cfg, {"run.out": str(tmp_path / "plain")}))
    measured = train(apply_overrides(cfg, {**EVAL, "train.eval_every": 3}))
    assert [s for s, _ in held_out(measured.run_dir)] == [3, 6, 8]
    assert trained(measured.run_dir) == trained(plain.run_dir)
    assert held_out(plain.run_dir) == [] and not (plain.run_dir / "checkpoints/best.pt").exists()
    assert "best_step" not in plain.summary and plain.summary["rebound_on"] == "smoothed_loss"


def test_best_is_exported_and_loaded_by_name(evaluated, tmp_path, capsys):
    run = evaluated.run_dir
    step = evaluated.summary["best_step"]
    assert main(["export", str(run), "--checkpoint", "best", "--out", str(tmp_path / "e")]) == 0
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["summary"]["checkpoint_step"] == step
    assert config["summary"]["checkpoint_val_loss"] == pytest.approx(
        evaluated.summary["best_val_loss"]
    )
    model, loaded = load_encoder(f"{run}:best")
    assert loaded["summary"]["checkpoint_step"] == step
    assert export_encoder(run, tmp_path / "four", checkpoint="4").is_dir()
    assert (
        json.loads((tmp_path / "four" / "config.json").read_text())["summary"]["checkpoint_step"]
        == 4
    )


def test_a_missing_named_checkpoint_says_what_the_run_has(tiny_config, evaluated):
    plain = train(apply_overrides(tiny_config, {"run.name": "plain"})).run_dir
    with pytest.raises(FileNotFoundError, match=r"no best checkpoint .*train.eval_every > 0"):
        resolve_checkpoint(f"{plain}:best")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint '7'; it has .*steps 4, 8"):
        resolve_checkpoint(f"{evaluated.run_dir}:7")
    with pytest.raises(ValueError, match=r"weights only .*resume from the run folder"):
        resume_state(evaluated.run_dir / "checkpoints" / "best.pt")


def test_a_resumed_run_keeps_its_best_and_measures_the_same_points(evaluated, tmp_path):
    full = evaluated.run_dir
    best_before = read_best(full)

    # Killed after step 4's checkpoint: the best so far (step 4's) is kept.
    early = tmp_path / "early"
    shutil.copytree(full, early)
    (early / "checkpoints" / "step_00000008.pt").unlink()
    (early / "summary.json").unlink()
    if best_before[0] == 8:  # what the folder held at step 4: step 4's best
        shutil.copy(full / "checkpoints" / "step_00000004.pt", early / "checkpoints" / "best.pt")
        state = torch.load(early / "checkpoints" / "best.pt", weights_only=True)
        state["val_loss"] = dict(held_out(full))[4]
        del state["optimizer"]
        torch.save(state, early / "checkpoints" / "best.pt")
    result = train(config_from_checkpoint(early), resume=early)
    assert held_out(early) == held_out(full)
    assert trained(early) == trained(full)
    assert read_best(early) == best_before
    assert (result.summary["best_step"], result.summary["best_val_loss"]) == best_before


def test_a_best_saved_after_the_resumed_step_is_chosen_again(evaluated, tmp_path, caplog):
    run = tmp_path / "branch"
    shutil.copytree(evaluated.run_dir, run)
    cfg = apply_overrides(config_from_checkpoint(run), {"optim.lr": 1e-2})
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    state["step"], state["val_loss"] = 6, -1.0  # from steps the resumed run takes again
    torch.save(state, run / "checkpoints" / "best.pt")
    (run / "checkpoints" / "step_00000008.pt").unlink()
    with caplog.at_level(logging.INFO, logger="salt"):
        result = train(cfg, resume=run / "checkpoints" / "step_00000004.pt")
    assert "removed checkpoints/best.pt of step 6, past step 4 resumed" in caplog.text
    assert read_best(run) == (8, pytest.approx(dict(held_out(run))[8]))
    assert result.summary["best_step"] == 8


def test_the_rebound_flag_follows_the_held_out_curve():
    train_falls = [{"step": s, "loss": 1.0 / s, "nonfinite_total": 0} for s in range(1, 21)]
    val_rises = [
        {"step": s, "val_loss": v} for s, v in ((5, 0.5), (10, 0.4), (15, 0.45), (20, 0.5))
    ]
    s = summarize(train_falls + val_rises, rebound_threshold=0.05)
    assert s["rebound_on"] == "val_loss" and s["late_rebound"]
    assert s["rebound"] == pytest.approx(0.25)
    assert (s["min_val_step"], s["min_val_loss"], s["last_val_loss"]) == (10, 0.4, 0.5)
    assert s["min_loss_step"] == 20 and s["nonfinite_steps"] == 0
    alone = summarize(train_falls, rebound_threshold=0.05)
    assert alone["rebound_on"] == "smoothed_loss" and not alone["late_rebound"]


def test_a_cached_teacher_is_scored_on_the_caches_val_split(tiny_overrides, tmp_path, caplog):
    source = build_config(overrides={**tiny_overrides, "data.spec": "synthetic:16"})
    cache = tmp_path / "cache"
    teacher = teacher_of(source)
    for split in ("train", "val"):
        cache_build.build_cache(teacher, source, cache, split=split, workers=0, progress=False)
    cfg = apply_overrides(source, {**EVAL, "teacher.spec": f"cached:{cache}"})
    run = train(cfg).run_dir
    assert [s for s, _ in held_out(run)] == [4, 8]
    step, loss = read_best(run)
    report = distill_loss(run / "checkpoints" / f"step_{step:08d}.pt", batches=2)
    assert report.data.endswith("(val split)") and report.loss == pytest.approx(loss, rel=1e-5)

    # A cache without one: the run goes on, says why there is no held-out loss, keeps no best.
    shutil.rmtree(cache)
    cache_build.build_cache(teacher, source, cache, workers=0, progress=False)
    with caplog.at_level(logging.WARNING, logger="salt"):
        run = train(apply_overrides(cfg, {"run.name": "no-val"})).run_dir
    assert "no held-out loss for this run (train.eval_every=4): cache" in caplog.text
    assert "salt cache build --split val" in caplog.text
    assert held_out(run) == [] and read_best(run) is None


def test_videos_are_scored_on_data_val_spec(tiny_overrides, tmp_path, caplog):
    for i in range(3):
        write_video(tmp_path / "train" / f"t{i}.mp4", n=12, seed=i)
        write_video(tmp_path / "held" / f"h{i}.mp4", n=12, seed=10 + i)
    videos = {
        **tiny_overrides,
        **EVAL,
        "data.spec": str(tmp_path / "train"),
        "data.frame_step": 2,
        "train.batch_size": 2,
        "train.steps": 4,
    }
    with caplog.at_level(logging.WARNING, logger="salt"):
        run = train(build_config(overrides={**videos, "run.name": "none"})).run_dir
    assert "have no held-out split; set data.val_spec to held-out videos" in caplog.text
    assert held_out(run) == []
    run = train(build_config(overrides={**videos, "data.val_spec": str(tmp_path / "held")}))
    assert [s for s, _ in held_out(run.run_dir)] == [4]
    assert held_out(run.run_dir)[0][1] == pytest.approx(
        distill_loss(run.run_dir, batches=2).loss, rel=1e-5
    )
    assert distill_loss(run.run_dir, batches=2).data == str(tmp_path / "held")


def test_ddp_ranks_share_the_held_out_clips_and_agree(tmp_path, tiny_overrides):
    cfg = build_config(
        overrides={**tiny_overrides, **EVAL, "train.steps": 4, "train.batch_size": 2}
    )
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(cfg.to_dict()))
    train_on_two_ranks(config, tmp_path)
    run = Path(cfg.run.out) / cfg.run.name
    (point,) = held_out(run)
    assert point[0] == 4 and read_best(run) == (4, pytest.approx(point[1]))
    # Each rank scored one of the two batches; their sums make the single-process number.
    report = distill_loss(run / "checkpoints" / "best.pt", batches=2)
    assert report.clips == 4 and report.loss == pytest.approx(point[1], rel=1e-5)
