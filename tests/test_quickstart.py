"""salt quickstart: every stage runs, the table and the plot report them, the export reloads,
and an earlier quickstart is never overwritten without --force."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import statistics

import attrs
import pytest
import torch
from PIL import Image

from salt.cli import main
from salt.data import SPLIT_SEEDS
from salt.encoder import VideoEncoder
from salt.eval.classify import ProbeScore
from salt.eval.stats import gap_in_stderr
from salt.export import load_encoder
from salt.metrics import read_series
from salt.plots import PALETTE
from salt.quickstart import (
    DEMO,
    FAST,
    LONG,
    MODELS,
    STAGES,
    QuickstartResult,
    QuickstartSettings,
    check_out,
    remove_outputs,
    run_classify,
    scored_checkpoint,
    scored_description,
    stage_config,
)
from salt.synthetic import SyntheticMotion


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """One fast quickstart through the CLI, in-process: (out dir, stdout, exit code). Its
    student standardizes its targets, so that path runs end to end too (the docs test's
    --fast run keeps raw targets)."""
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    stdout = io.StringIO()
    flags = ["--fast", "--no-progress", "--target-norm", "instance"]
    with contextlib.redirect_stdout(stdout):
        code = main(["quickstart", *flags, "--out", str(out)])
    return out, stdout.getvalue(), code


def test_the_table_reports_every_stage_model_and_loss(quickstart):
    out, text, code = quickstart
    assert code == 0
    lines = text.splitlines()
    for stage in [*STAGES, "total"]:
        assert re.search(rf"^  {stage} +\d+\.\d$", text, re.M), f"no time for stage {stage}"
    header = next(line for line in lines if line.startswith("probes (accuracy)"))
    assert header.split()[2:] == [*MODELS, "chance"]
    for row in (
        "teacher (pixels)",
        "student (cached, instance)",
        "distill, held-out",
        "time-arrow",
    ):
        assert row in text
    header = next(line for line in lines if line.startswith("motion:28 (top-1)"))
    assert header.split()[2:] == [*MODELS, "chance"]
    row = next(line for line in lines if line.startswith("  attentive probe"))
    assert "whitened" not in row  # --fast's, as --demo's: raw tokens, V-JEPA's protocol
    assert len(re.findall(r"\d\.\d{3}\+-\d\.\d{3}", row)) == len(MODELS)
    assert re.search(r"^  clips labelled / tested +28 / 14$", text, re.M)
    assert re.search(r"^  student > teacher +[-+](\d+\.\d|inf) s\.e\.$", text, re.M)
    assert re.search(r"^  student >= teacher > random +(not )?shown$", text, re.M)
    assert re.search(r"^  SALT's claim \(>= 3 s\.e\. each\) +(not )?reached$", text, re.M)
    assert (out / "summary.txt").read_text().strip() in text
    assert str(out / "loss_curves.png") in text


def test_the_numbers_are_finite_and_every_stage_is_timed(quickstart):
    out, _, _ = quickstart
    report = json.loads((out / "quickstart.json").read_text())
    for run in ("teacher_summary", "student_summary"):
        for key in ("min_loss", "last_loss", "first_loss"):
            assert math.isfinite(report[run][key]) and report[run][key] > 0
    assert math.isfinite(report["distill"]["loss"]) and report["distill"]["loss"] > 0
    assert 0 < report["distill"]["ratio"] < 2
    assert list(report["probes"]) == list(MODELS)
    for probe in report["probes"].values():
        for task in probe["tasks"].values():
            assert 0 <= task["accuracy"] <= 1
            # Cross-validated by video: every one of the --fast 8 videos is tested.
            assert len(task["videos"]) == 8 and task["folds"] in (0, 5)
    assert list(report["classify"]) == list(MODELS)
    for result in report["classify"].values():
        assert result["data"] == "motion:28" and result["train_clips"] == 28
        assert result["test_clips"] == 14 and result["chance"] == pytest.approx(1 / 14)
        assert result["whitened"] is False  # --fast's: see --whiten
        attentive = result["scores"]["attentive"]
        assert len(attentive["accuracies"]) == 2  # --fast: two probe seeds
        assert all(a * 14 == round(a * 14) for a in attentive["accuracies"])  # hits / 14
    claim = report["claim"]
    student, teacher, random = (report["classify"][m]["scores"]["attentive"] for m in MODELS)
    assert claim["reached"] == (
        claim["student_vs_teacher"] >= 3 and claim["teacher_vs_random"] >= 3
    )
    means = [statistics.fmean(x["accuracies"]) for x in (student, teacher, random)]
    assert claim["ordered"] == (means[0] >= means[1] > means[2])
    # Seeds and test clips both counted: the gaps follow from the reported hits.
    scores = [
        ProbeScore("attentive", tuple(x["accuracies"]), tuple(map(tuple, x["hits"])))
        for x in (student, teacher)
    ]
    assert claim["student_vs_teacher"] == pytest.approx(gap_in_stderr(*scores))
    assert list(report["seconds"]) == list(STAGES)
    assert all(s > 0 for s in report["seconds"].values())
    assert report["reload_max_diff"] == 0.0


def test_the_loss_curves_are_a_png_with_both_runs_drawn(quickstart):
    out, _, _ = quickstart
    path = out / "loss_curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 600 <= width <= 2000 and 200 <= height <= 1000
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert PALETTE[0] in colours and PALETTE[1] in colours  # teacher and student lines
    for run in ("teacher", "student"):
        points = read_series(out / "runs" / run / "metrics.jsonl", keys=["loss"])["loss"]
        assert len(points) == 6 and all(math.isfinite(v) for _, v in points)


def test_the_student_export_reloads_with_the_checkpoint_tokens(quickstart):
    out, _, _ = quickstart
    scored = json.loads((out / "quickstart.json").read_text())["student_checkpoint"]
    exported = VideoEncoder.from_pretrained(out / "encoders" / "student")
    checkpoint = VideoEncoder.from_pretrained(scored["path"])
    clips = SyntheticMotion(length=1, num_frames=4, image_size=64, seed=1)
    video = clips[0]["video"][None]  # [1, T, C, H, W] uint8
    with torch.inference_mode():
        tokens = exported(video)
        assert tokens.shape == (1, 2 * 4 * 4, exported.embed_dim)
        assert torch.equal(tokens, checkpoint(video))
    config = json.loads((out / "encoders" / "student" / "config.json").read_text())
    assert config["teacher"] == f"cached:{out / 'cache'}"


def test_a_second_run_into_the_same_out_is_refused(quickstart, capsys):
    out, _, _ = quickstart
    before = (out / "quickstart.json").read_text()
    code = main(["quickstart", "--fast", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "holds an earlier quickstart" in err and "--force" in err and str(out) in err
    assert (out / "quickstart.json").read_text() == before


def test_force_removes_only_what_a_quickstart_wrote(tmp_path):
    (tmp_path / "runs" / "teacher").mkdir(parents=True)
    (tmp_path / "loss_curves.png").write_bytes(b"old")
    (tmp_path / "quickstart.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        check_out(tmp_path, force=False)
    remove_outputs(check_out(tmp_path, force=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_refuses_a_folder_that_is_not_a_quickstart(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "train.py").write_text("print('mine')")
    with pytest.raises(
        FileExistsError, match=r"did not write \(runs/\), not an earlier quickstart"
    ):
        check_out(tmp_path, force=True)
    assert (tmp_path / "runs" / "train.py").read_text() == "print('mine')"


def test_classify_clips_below_one_per_class_is_a_clear_error(tmp_path, capsys):
    code = main(["quickstart", "--fast", "--classify-clips", "10", "--out", str(tmp_path / "q")])
    assert code == 2
    assert "classify_clips" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_flags_reach_the_settings(tmp_path, monkeypatch):
    """--no-whiten, --data, --device, --batch-size, --clips and --workers reach the
    settings; unset, the defaults (the recipe at the budget that shows the ordering) stay."""
    import salt.quickstart

    seen = []

    def stop(out, settings, **kwargs):
        seen.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(salt.quickstart, "run_quickstart", stop)
    flags = ["--no-whiten", "--data", "synthetic", "--device", "auto", "--batch-size", "32"]
    flags += ["--clips", "4096", "--workers", "4"]
    for extra in ([], flags):
        with pytest.raises(KeyboardInterrupt):
            main(["quickstart", "--out", str(tmp_path / "q"), *extra])
    default, chosen = seen
    assert default == QuickstartSettings()
    assert (default.classify_whiten, default.data, default.device, default.batch_size) == (
        True,
        "motion",
        "cpu",
        8,
    )
    assert (default.teacher_steps, default.student_steps, default.classify_spec) == (
        4000,
        6000,
        "motion:14336",
    )
    assert (chosen.classify_whiten, chosen.data, chosen.device, chosen.batch_size) == (
        False,
        "synthetic",
        "auto",
        32,
    )
    assert (default.clips, default.workers, chosen.clips, chosen.workers) == (2048, 1, 4096, 4)


class Scored:
    """A classify report reduced to what the claim reads: its attentive probe's score."""

    def __init__(self, *accuracies: float):
        self.accuracies = accuracies

    def score(self, probe: str) -> ProbeScore:
        return ProbeScore(probe, self.accuracies)


@pytest.mark.parametrize(
    ("student", "teacher", "random", "ordered", "reached"),
    [
        ((0.27, 0.28), (0.23, 0.24), (0.19, 0.20), True, True),  # 0.04 apart: 5.7 s.e. each
        ((0.235, 0.235), (0.23, 0.24), (0.19, 0.20), True, False),  # a tie counts as >=
        ((0.22, 0.23), (0.23, 0.24), (0.19, 0.20), False, False),  # student under teacher
        ((0.25, 0.26), (0.19, 0.20), (0.19, 0.20), False, False),  # teacher only ties random
    ],
)
def test_the_ordering_and_the_claim_are_read_from_the_three_scores(
    student, teacher, random, ordered, reached
):
    """``ordered`` is student >= teacher > random in mean top-1; ``reached`` needs both gaps
    at >= 3 standard errors."""
    classify = {"student": Scored(*student), "teacher": Scored(*teacher), "random": Scored(*random)}
    fields = {f.name: None for f in attrs.fields(QuickstartResult)}
    claim = QuickstartResult(**{**fields, "classify": classify}).claim()
    assert (claim["ordered"], claim["reached"]) == (ordered, reached)


def test_long_and_mask_flags_reach_the_settings(tmp_path, monkeypatch):
    """--long and --demo start from their presets; flags given with them still win."""
    import salt.quickstart

    seen = []

    def stop(out, settings, **kwargs):
        seen.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(salt.quickstart, "run_quickstart", stop)
    out = ["--out", str(tmp_path / "q")]
    for extra in (
        ["--long"],
        ["--long", "--teacher-steps", "100", "--classify-max-train", "0"],
        ["--mask", "tube:0.75", "--image-size", "64", "--classify-max-train", "28"],
    ):
        with pytest.raises(KeyboardInterrupt):
            main(["quickstart", *out, *extra])
    long, shortened, masked = seen
    assert long == LONG == attrs.evolve(QuickstartSettings(), student_steps=9000)
    assert (long.mask, long.classify_max_train, long.classify_whiten) == ("future:0.5", 448, True)
    assert shortened == attrs.evolve(LONG, teacher_steps=100, classify_max_train=0)
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--no-whiten"])
    assert seen[-1] == attrs.evolve(LONG, classify_whiten=False)
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--seed", "3"])
    assert seen[-1] == attrs.evolve(LONG, seed=3)
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--target-norm", "none"])
    assert seen[-1] == attrs.evolve(LONG, target_norm="none")
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--benchmark", "motion-natural"])
    assert seen[-1] == attrs.evolve(LONG, benchmark="motion-natural")
    assert seen[-1].classify_spec == "motion-natural:14336"
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--eval-points", "0", "--student-checkpoints", "4"])
    assert seen[-1] == attrs.evolve(QuickstartSettings(), eval_points=0, student_checkpoints=4)
    assert (LONG.student_checkpoint, QuickstartSettings().student_checkpoint) == ("best", "best")
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--student-checkpoint", "last"])
    assert seen[-1] == attrs.evolve(LONG, student_checkpoint="last")
    with pytest.raises(SystemExit):
        main(["quickstart", *out, "--student-checkpoint", "latest"])
    with pytest.raises(SystemExit):
        main(["quickstart", *out, "--target-norm", "batch"])
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--student-warmup", "600"])
    assert seen[-1] == attrs.evolve(LONG, student_warmup=600)
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--long", "--teacher-warmup", "200"])
    assert seen[-1] == attrs.evolve(LONG, teacher_warmup=200)
    for flag in ("--student-warmup", "--teacher-warmup"):
        with pytest.raises(SystemExit):
            main(["quickstart", *out, flag, "-1"])
    assert (masked.mask, masked.image_size, masked.classify_max_train) == ("tube:0.75", 64, 28)
    with pytest.raises(KeyboardInterrupt):
        main(["quickstart", *out, "--demo", "--student-steps", "200"])
    assert seen[-1] == attrs.evolve(DEMO, student_steps=200)
    assert (DEMO.data, DEMO.image_size, DEMO.mask, DEMO.classify_spec) == (
        "synthetic",
        112,
        "multiblock",
        "motion:224",
    )
    with pytest.raises(SystemExit):  # one preset at a time
        main(["quickstart", *out, "--demo", "--long"])
    with pytest.raises(SystemExit):
        main(["quickstart", *out, "--long", "--fast"])


def test_dry_run_sizes_every_stage_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quickstart", "--long", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "data motion:2048 (2048 clips), 8x64px clips, grid (4, 4, 4)" in text
    assert "masks future:0.5, context 32 tokens" in text  # the first 2 of 4 time slices
    assert "student (stage 2): 9000 steps" in text
    assert "14 classes, 448 train / 7168 test clips" in text
    assert "attentive probe, whitened" in text
    assert "targets instance (loss.target_norm), warmup 1200 (optim.warmup_steps)" in text
    assert "held-out loss every 500 steps on 128 clips of the cache's val split" in text
    assert "scored and exported: the best checkpoint by held-out loss" in text
    assert not out.exists()
    for flags in (["--student-checkpoint", "last"], ["--eval-points", "0"]):
        assert main(["quickstart", "--long", "--dry-run", *flags, "--out", str(out)]) == 0
        assert "scored and exported: the last checkpoint" in capsys.readouterr().out
    # The student's warmup as its run will use it: as given, up to half of its steps - and
    # the recipe's 1200 steps kept when its steps are cut, not 10% of them.
    for flags, used in (
        (["--student-warmup", "2400"], 2400),
        (["--student-warmup", "300"], 300),
        (["--student-warmup", "7000"], 4500),
        (["--student-steps", "9000"], 1200),
    ):
        flags = ["--long", "--dry-run", *flags, "--out", str(out)]
        assert main(["quickstart", *flags]) == 0
        assert f"warmup {used} (optim.warmup_steps)" in capsys.readouterr().out
    # The teacher's, capped the same way, in its own run's plan.
    for given, used in ("300", 300), ("1000", 1000), ("3000", 2000):
        flags = ["--long", "--dry-run", "--teacher-warmup", given, "--out", str(out)]
        assert main(["quickstart", *flags]) == 0
        teacher_plan = capsys.readouterr().out.split("student (stage 2)")[0]
        assert f"4000 steps (warmup {used}," in teacher_plan
    assert main(["quickstart", "--dry-run", "--mask", "nope", "--out", str(out)]) == 2
    assert "unknown masker 'nope'" in capsys.readouterr().err
    # An earlier quickstart there: refused without --force; with it, named and kept.
    out.mkdir()
    (out / "summary.txt").write_text("earlier")
    assert main(["quickstart", "--fast", "--dry-run", "--force", "--out", str(out)]) == 2
    assert "did not write (summary.txt), not an earlier quickstart" in capsys.readouterr().err
    (out / "quickstart.json").write_text("{}")
    assert main(["quickstart", "--fast", "--dry-run", "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["quickstart", "--fast", "--dry-run", "--force", "--out", str(out)]) == 0
    assert "(--force replaces: quickstart.json, summary.txt)" in capsys.readouterr().out
    assert (out / "summary.txt").read_text() == "earlier"


def test_both_runs_use_the_chosen_masker(tmp_path):
    for name in ("teacher", "student"):
        cfg = stage_config(LONG, tmp_path, name, "pixels", 5, progress=False)
        assert (cfg.mask.name, cfg.data.spec, cfg.data.image_size) == (
            "future:0.5",
            "motion:2048",
            64,
        )


def test_only_the_student_standardizes_its_targets(quickstart, tmp_path):
    """--target-norm is the student's loss.target_norm; the pixel teacher keeps its own."""
    out, _, _ = quickstart
    runs = {
        name: json.loads((out / "runs" / name / "config.json").read_text())
        for name in ("teacher", "student")
    }
    assert (runs["teacher"]["loss"]["target_norm"], runs["student"]["loss"]["target_norm"]) == (
        "none",
        "instance",
    )
    assert json.loads((out / "quickstart.json").read_text())["target_norm"] == "instance"
    settings = attrs.evolve(LONG, target_norm="instance")
    assert LONG.target_norm == "instance"  # the recipe's
    stages = {
        name: stage_config(settings, tmp_path, name, teacher, 5, progress=False)
        for name, teacher in (("teacher", "pixels"), ("student", f"cached:{tmp_path}"))
    }
    assert stages["student"].loss.target_norm == "instance"
    assert stages["teacher"].loss.target_norm == "none"
    plain = attrs.evolve(LONG, target_norm="none")
    assert stage_config(plain, tmp_path, "student", "pixels", 5, False).loss.target_norm == "none"
    with pytest.raises(ValueError, match="target_norm"):
        attrs.evolve(LONG, target_norm="batch")


def test_each_run_takes_its_own_warmup(tmp_path):
    """--student-warmup and --teacher-warmup are each run's optim.warmup_steps: by default
    the recipe's 400 and 1200 steps, --demo's the demo profile's 10."""
    assert (QuickstartSettings().teacher_warmup, QuickstartSettings().student_warmup) == (400, 1200)
    base = DEMO
    for chosen, expected in (
        ({"student_warmup": 1200}, (10, 1200)),
        ({"teacher_warmup": 400}, (400, 10)),
        ({"teacher_warmup": 400, "student_warmup": 1200}, (400, 1200)),
        ({}, (10, 10)),
    ):
        settings = attrs.evolve(base, **chosen)
        teacher = stage_config(settings, tmp_path, "teacher", "pixels", 4000, progress=False)
        student = stage_config(settings, tmp_path, "student", f"cached:{tmp_path}", 12000, False)
        assert (teacher.optim.warmup_steps, student.optim.warmup_steps) == expected
    for field in ("student_warmup", "teacher_warmup"):
        with pytest.raises(ValueError, match=field):
            attrs.evolve(LONG, **{field: -1})


def test_the_student_measures_its_held_out_loss_and_keeps_checkpoints(tmp_path):
    """The student scores its held-out loss eval_points times and keeps student_checkpoints
    evenly spaced checkpoints; the teacher keeps its last and scores nothing."""
    student = stage_config(
        LONG, tmp_path, "student", f"cached:{tmp_path}", LONG.student_steps, False
    )
    t = student.train
    assert (t.eval_every, t.eval_batches, t.checkpoint_every, t.keep_checkpoints) == (
        500,
        16,
        1500,
        6,
    )
    teacher = stage_config(LONG, tmp_path, "teacher", "pixels", 4000, False).train
    assert (teacher.eval_every, teacher.checkpoint_every, teacher.keep_checkpoints) == (0, 4000, 1)
    off = attrs.evolve(LONG, eval_points=0, student_checkpoints=1)
    t = stage_config(off, tmp_path, "student", f"cached:{tmp_path}", 300, False).train
    assert (t.eval_every, t.checkpoint_every, t.keep_checkpoints) == (0, 300, 1)
    few = attrs.evolve(FAST, eval_points=24, student_checkpoints=8)  # more than its 5 steps
    t = stage_config(few, tmp_path, "student", f"cached:{tmp_path}", 5, False).train
    assert (t.eval_every, t.checkpoint_every, t.keep_checkpoints) == (1, 1, 5)


def test_the_quickstart_student_keeps_its_best_by_held_out_loss(quickstart):
    """The cache holds a val split of the clips the student is scored on; the student's run
    logs val_loss and keeps best.pt; the table shows its step and loss."""
    out, text, _ = quickstart
    cache = json.loads((out / "cache" / "cache.json").read_text())
    assert set(cache["splits"]) == {"train", "val"}
    val = read_series(out / "runs" / "student" / "metrics.jsonl", ["val_loss"])["val_loss"]
    assert len(val) == FAST.eval_points
    assert (out / "runs" / "student" / "checkpoints" / "best.pt").is_file()
    summary = json.loads((out / "quickstart.json").read_text())["student_summary"]
    step, loss = min(val, key=lambda point: point[1])
    assert (summary["best_step"], summary["best_val_loss"]) == (step, pytest.approx(loss))
    row = next(line for line in text.splitlines() if "student, held-out (best)" in line)
    assert f"{loss:.4f} ({step})" in row


def test_the_quickstart_scores_and_exports_the_students_best_checkpoint(quickstart):
    """Every evaluation stage and the export use the checkpoint with the lowest held-out
    loss (picked without labels), and the table and quickstart.json say which it was."""
    out, text, _ = quickstart
    report = json.loads((out / "quickstart.json").read_text())
    summary, scored = report["student_summary"], report["student_checkpoint"]
    best = out / "runs" / "student" / "checkpoints" / "best.pt"
    assert scored == {
        "which": "best",
        "step": summary["best_step"],
        "path": str(best),
        "val_loss": pytest.approx(summary["best_val_loss"]),
    }
    config = json.loads((out / "encoders" / "student" / "config.json").read_text())["summary"]
    assert (config["checkpoint_step"], config["checkpoint_val_loss"]) == (
        summary["best_step"],
        pytest.approx(summary["best_val_loss"]),
    )
    row = next(line for line in text.splitlines() if "student scored, exported" in line)
    assert f"best ({summary['best_step']})" in row


def test_the_scored_checkpoint_is_the_last_when_asked_or_without_a_best(quickstart, tmp_path):
    out, _, _ = quickstart
    run = out / "runs" / "student"
    last = run / "checkpoints" / f"step_{FAST.student_steps:08d}.pt"
    assert scored_checkpoint(run, FAST) == run / "checkpoints" / "best.pt"
    assert scored_checkpoint(run, attrs.evolve(FAST, student_checkpoint="last")) == last
    bare = tmp_path / "student"  # a run that measured no held-out loss: no best.pt
    (bare / "checkpoints").mkdir(parents=True)
    shutil.copy(last, bare / "checkpoints" / last.name)
    assert scored_checkpoint(bare, FAST) == bare / "checkpoints" / last.name
    assert scored_description(bare / "checkpoints" / last.name) == {
        "which": "last",
        "step": FAST.student_steps,
        "path": str(bare / "checkpoints" / last.name),
    }
    with pytest.raises(ValueError, match="student_checkpoint"):
        attrs.evolve(FAST, student_checkpoint="latest")


def test_every_stage_after_the_student_uses_the_scored_checkpoint(tmp_path, monkeypatch):
    """A scored checkpoint before the last step (as best.pt is when the held-out loss rises
    at the end): the distillation loss, the student scored and its export are that step's."""
    import salt.quickstart

    picked = []

    def third_step(run_dir, settings):
        picked.append(run_dir / "checkpoints" / "step_00000003.pt")
        return picked[-1]

    monkeypatch.setattr(salt.quickstart, "scored_checkpoint", third_step)
    settings = attrs.evolve(FAST, student_checkpoints=2, classify_seeds=2, classify_epochs=1)
    result = salt.quickstart.run_quickstart(tmp_path / "qs", settings, progress=False)
    assert (result.student_checkpoint["step"], result.distill.step) == (3, 3)
    summary = json.loads((result.student_export / "config.json").read_text())["summary"]
    assert summary["checkpoint_step"] == 3
    video = SyntheticMotion(length=1, num_frames=4, image_size=64, seed=1)[0]["video"][None]
    with torch.inference_mode():
        exported = VideoEncoder.from_pretrained(result.student_export)(video)
        assert torch.equal(exported, VideoEncoder.from_pretrained(picked[0])(video))
        assert not torch.equal(exported, VideoEncoder.from_pretrained(result.student_run)(video))


def test_the_stages_render_each_training_and_held_out_clip_once(tmp_path, monkeypatch):
    """Both runs, the cache, the held-out checks and the distillation loss read one set of
    rendered clips (rendered before the teacher, not again by each stage)."""
    import salt.quickstart

    renders = []
    render = SyntheticMotion.render

    def counted(self, index, frames=None, scene=0):
        if frames is None:  # a whole clip (the temporal probes render frames of their own)
            renders.append((self.seed, index))
        return render(self, index, frames, scene)

    monkeypatch.setattr(SyntheticMotion, "render", counted)
    # The export's reload check renders two val clips of its own, outside the datasets.
    monkeypatch.setattr(salt.quickstart, "tokens_difference", lambda a, b: 0.0)
    settings = attrs.evolve(FAST, classify_seeds=2, classify_epochs=1)
    salt.quickstart.run_quickstart(tmp_path / "qs", settings, progress=False)
    train = sorted(i for seed, i in renders if seed == SPLIT_SEEDS["train"])
    held_out = sorted(i for seed, i in renders if seed == SPLIT_SEEDS["val"])
    assert train == list(range(settings.clips))
    assert held_out == list(range(settings.eval_batches * settings.batch_size))


def test_classify_max_train_labels_only_the_first_clips(quickstart):
    out, _, _ = quickstart
    model, config = load_encoder(out / "encoders" / "student")
    settings = attrs.evolve(FAST, classify_max_train=14, classify_seeds=2, classify_epochs=1)
    (report,) = run_classify({"student": (model, config)}, settings, progress=False).values()
    assert (report.train_clips, report.test_clips) == (14, 14)  # one clip per class, all tests
    assert (report.data, len(report.classes)) == ("motion:28", 14)


def test_runs_train_on_the_chosen_data_device_and_seed(tmp_path):
    settings = attrs.evolve(FAST, data="motion", device="auto", seed=7)
    cfg = stage_config(settings, tmp_path, "teacher", "pixels", 5, progress=False)
    assert (cfg.data.spec, cfg.train.device, cfg.train.steps) == ("motion:24", "auto", 5)
    assert cfg.train.seed == 7
    with pytest.raises(ValueError, match="data"):
        attrs.evolve(FAST, data="kinetics")


def test_probe_videos_below_four_is_a_clear_error(tmp_path, capsys):
    code = main(["quickstart", "--fast", "--probe-videos", "2", "--out", str(tmp_path / "q")])
    assert code == 2
    assert "probe_videos" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
