"""The `salt` command line as a user runs it: train, config files, overrides, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salt import doctor
from salt.cli import build_parser, main
from salt.cli.train import resolve_train_config


def run_salt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "salt.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def check_run(run: Path, steps: int) -> dict:
    assert (run / "config.json").is_file()
    assert len(list(run.glob("*.log"))) == 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == steps
    assert (run / "checkpoints" / f"step_{steps:08d}.pt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == steps and summary["stopped_by"] is None
    return summary


def test_salt_train_with_no_options_plans_the_demo_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "profile demo" in plan and "nothing was trained" in plan
    assert "student vit_tiny" in plan and "teacher random:vit_tiny" in plan
    assert "100 steps" in plan and "8x112px clips" in plan
    assert not (tmp_path / "runs").exists()


def test_the_demo_run_trains_a_small_student_and_the_loss_falls(tmp_path):
    # The no-options run with fewer steps (the 100-step default takes ~1.5 minutes here).
    proc = run_salt("train", "--steps", "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("vit_tiny-random_vit_tiny-")
    summary = check_run(run, 30)
    assert summary["last_loss"] < 0.6 * summary["first_loss"], summary
    assert f"run {Path('runs') / run.name}" in proc.stdout


def test_pixel_teacher_run_from_the_issue(tmp_path):
    proc = run_salt(
        "train",
        "--student",
        "vit_tiny",
        "--teacher",
        "pixels",
        "--data",
        "synthetic",
        "--steps",
        "20",
        "--run-name",
        "pix",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = check_run(tmp_path / "runs" / "pix", 20)
    assert summary["min_loss"] < 0.9 * summary["first_loss"], summary
    saved = json.loads((tmp_path / "runs" / "pix" / "config.json").read_text())
    assert saved["teacher"]["spec"] == "pixels" and saved["train"]["steps"] == 20


def parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_flags_file_and_sets_resolve_in_order(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text(
        '[optim]\nlr = 5e-4\n[train]\nbatch_size = 3\nsteps = 7\n[mask]\nname = "tube"\n'
    )
    cfg = resolve_train_config(
        parse(
            "--profile",
            "recipe",
            "--config",
            str(file),
            "--student",
            "vit_s",
            "--steps",
            "9",
            "--set",
            "optim.lr=1e-4",
            "--set",
            "loss.name=mse+vicreg",
            "--set",
            "loss.options.vicreg.cov_weight=0.5",
        )
    )
    assert cfg.profile == "recipe" and cfg.data.image_size == 224  # recipe geometry kept
    assert cfg.optim.lr == 1e-4  # --set beats the file
    assert cfg.train.batch_size == 3 and cfg.mask.name == "tube"  # from the file
    assert cfg.train.steps == 9 and cfg.student.name == "vit_s"  # flags beat the file
    assert cfg.loss.options == {"vicreg": {"cov_weight": 0.5}}


def test_demo_profile_is_picked_without_a_gpu_and_recipe_can_be_forced():
    demo = resolve_train_config(parse("--device", "cpu"))
    assert (
        demo.profile == "demo" and demo.student.name == "vit_tiny" and demo.data.image_size == 112
    )
    recipe = resolve_train_config(parse("--device", "cpu", "--profile", "recipe"))
    assert recipe.student.name == "vit_l" and recipe.teacher.spec == "cached:v1huge"
    assert (recipe.optim.lr, recipe.optim.min_lr, recipe.optim.warmup_steps) == (2e-4, 1e-5, 2000)


def test_bad_overrides_are_clear_errors(tmp_path, capsys):
    assert main(["train", "--set", "optim.learning_rate=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.learning_rate'" in err and "Valid: lr, min_lr" in err
    assert main(["train", "--set", "nonsense", "--out", str(tmp_path)]) != 0
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "--student", "vit_larg", "--out", str(tmp_path), "--steps", "1"]) == 2
    assert "Did you mean 'vit_large'" in capsys.readouterr().err


def test_resume_continues_with_the_saved_config(tmp_path, tiny_overrides, capsys):
    args = ["train", "--out", str(tmp_path), "--run-name", "r", "--no-progress"]
    for key, value in tiny_overrides.items():
        if not key.startswith("run.") and key != "train.steps":
            args += ["--set", f"{key}={value}"]
    assert main([*args, "--steps", "4"]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--steps", "6", "--no-progress"]) == 0
    records = [
        json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"]["image_size"] == 64  # the resumed run kept its own geometry


def test_doctor_reports_every_check(capsys):
    code = main(["doctor", "--json"])
    results = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in results]
    assert names == ["torch", "cuda", "nvml", "decoders", "codecs", "shared memory", "semaphores"]
    assert all(r["status"] in {"OK", "WARN", "FAIL"} for r in results)
    assert all(r["fix"] for r in results if r["status"] != "OK")
    assert code == (1 if any(r["status"] == "FAIL" for r in results) else 0)


def test_doctor_survives_a_crashing_check(monkeypatch):
    def broken():
        raise OSError("no /proc here")

    monkeypatch.setattr(doctor, "CHECKS", (broken,))
    (result,) = doctor.run_checks()
    assert result.status == "FAIL" and "no /proc here" in result.detail


@pytest.mark.parametrize("command", ["train", "plugins", "doctor"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: salt" in capsys.readouterr().out


def test_dry_run_checks_and_sizes_a_run_without_training(tmp_path, capsys):
    args = ["train", "--profile", "recipe", "--device", "cpu", "--teacher", "pixels"]
    assert main([*args, "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # nothing written, nothing trained
    assert "student vit_l (303.9M params)" in out  # ViT-L/16 at 16x224, built on "meta"
    assert "predictor transformer 12x512" in out and "teacher pixels (dim 1536)" in out
    assert "grid (8, 14, 14) = 1568 tokens" in out
    assert "100000 steps (warmup 2000" in out and "24 x accum 1 x 1 = 24 clips/step" in out
    tflops = float(out.split(" TFLOP/step")[0].rsplit(" ", 1)[1])
    # Forward + backward of a ViT-L on ~40% of 1568 tokens x 2 mask groups x 24 clips.
    assert 10 < tflops < 100
    assert "nothing was trained" in out


def test_dry_run_reports_what_a_real_run_would_fail_on(tmp_path, capsys):
    assert main(["train", "--teacher", "cached:no-such-cache", "--dry-run"]) == 2
    assert "no-such-cache" in capsys.readouterr().err


def test_print_config_is_a_config_file_that_resolves_to_the_same_config(tmp_path, capsys):
    sets = ["--set", "optim.lr=3e-4", "--student", "vit_small", "--profile", "demo"]
    assert main(["train", *sets, "--print-config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "resolved.json").write_text(printed)
    args = build_parser().parse_args(["train", "--config", str(tmp_path / "resolved.json")])
    resolved = json.dumps(resolve_train_config(args).to_dict(), indent=2)
    assert resolved == printed.strip()
    assert json.loads(printed)["optim"]["lr"] == 3e-4


# --- rough edges ---------------------------------------------------------------------------


def test_a_misspelled_option_or_command_gets_the_closest_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--stpes", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "salt train: error: unrecognized arguments: --stpes (did you mean --steps?)" in err
    with pytest.raises(SystemExit):
        main(["cache", "build", "--teacher", "pixels", "--shard-sise", "4"])
    assert "(did you mean --shard-size?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_verbose_works_after_the_command_too(tmp_path):
    parser = build_parser()
    assert parser.parse_args(["cache", "info", "x", "-v"]).verbose is True
    assert parser.parse_args(["-v", "cache", "info", "x"]).verbose is True
    assert parser.parse_args(["cache", "info", "x"]).verbose is False
    # -v shows the traceback instead of one line, wherever it is written.
    with pytest.raises(FileNotFoundError, match="no latent cache"):
        main(["cache", "info", str(tmp_path / "nope"), "-v"])


def test_help_describes_the_tool_and_every_option_says_what_it_does(capsys):
    import argparse

    parser = build_parser()
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "salt quickstart" in text and "Only this module knows about argv" not in text
    missing = []

    def walk(p, path):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*path, name])
            elif not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings)}")

    walk(parser, ["salt"])
    assert missing == []


def test_teachers_and_evaluations_default_to_a_gpu_when_there_is_one():
    parser = build_parser()
    for argv in (
        ["cache", "build", "--teacher", "pixels"],
        ["eval", "distill", "run"],
        ["eval", "classify", "enc"],
        ["eval", "curve", "run"],
    ):
        assert parser.parse_args(argv).device == "auto", argv


def test_install_hints_name_what_pip_can_install():
    from salt.decoders import DECODERS

    hints = [d.install for d in DECODERS.values()]
    cli = Path(__file__).parents[1] / "salt" / "cli"
    source = "".join(f.read_text() for f in sorted(cli.glob("*.py")))
    assert "salt-vla[" not in source + " ".join(hints)
    assert "pip install -e '.[app]'" in source


def with_progress_bar(cfg):
    """``cfg`` with its progress bar on, as the recipe has it."""
    from salt.config import apply_overrides

    return apply_overrides(cfg, {"train.progress": True})


@pytest.mark.parametrize("terminal", [False, True])
def test_without_a_terminal_the_bar_gives_way_to_periodic_lines(
    tiny_config, tmp_path, capsys, monkeypatch, terminal
):
    """A cluster job's log (stderr to a file) gets a metrics line every log_every steps,
    not a redrawn bar; a terminal gets the bar and no step lines."""
    config = tmp_path / "tiny.json"
    config.write_text(with_progress_bar(tiny_config).dumps())
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    args = ["train", "--config", str(config), "--steps", "2", "--run-name", f"t{terminal}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    if terminal:
        assert lines == [] and "train:" in err  # the bar's label
    else:
        assert [line.split()[1] for line in lines] == ["1/2", "2/2"] and "train:" not in err
