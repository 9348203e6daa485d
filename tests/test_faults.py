"""Fault injection: damaged caches, exports, checkpoints and runs, unwritable folders.

Every case runs the command a user would run and asserts the outcome: the right result,
or a non-zero exit with one line on stderr that names the file (or field) - never a
traceback, never a silently wrong result.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import TINY
from videos import write_video

import salt.cache.build as cache_build
from salt.cache import LatentCache, verify_cache
from salt.cli import main
from salt.config import build_config
from salt.encoder import VideoEncoder
from salt.models import teacher_of
from salt.train import train

pytestmark = pytest.mark.usefixtures("one_thread_module")

GEOMETRY = {"data.num_frames": 4, "data.image_size": 32, "data.frame_step": 2}


def settings(out: Path, **extra) -> dict:
    return {
        **TINY,
        **GEOMETRY,
        "data.spec": "synthetic:24",
        "run.out": str(out),
        "run.name": "run",
        **extra,
    }


def set_flags(overrides: dict) -> list[str]:
    flags = []
    for key, value in overrides.items():
        flags += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return flags


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``salt ARGV``; the CLI must never raise."""
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def one_line_error(code: int, err: str, *names: str) -> str:
    """The CLI's error: exit 2, one ``salt: error:`` line naming each of ``names``."""
    lines = [line for line in err.splitlines() if line.startswith("salt: error:")]
    assert code == 2 and len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def train_from(capsys, cache: Path, out: Path, *flags: str) -> tuple[int, str]:
    """``salt train`` from the cache for one epoch (every clip read once)."""
    overrides = settings(out, **{"teacher.spec": f"cached:{cache}", "train.steps": 6})
    return run_cli(capsys, "train", "--no-progress", *set_flags(overrides), *flags)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A cache (3 shards of 8 clips), a 4-step run and its export, built once."""
    root = tmp_path_factory.mktemp("pristine")
    cfg = build_config(overrides=settings(root / "runs", **{"train.steps": 4}))
    cache_build.build_cache(
        teacher_of(cfg), cfg, root / "cache", shard_size=8, workers=0, progress=False
    )
    result = train(cfg)
    from salt.export import export_encoder

    export_encoder(result.run_dir, root / "export")
    return root


@pytest.fixture
def cache(pristine, tmp_path):
    return Path(shutil.copytree(pristine / "cache", tmp_path / "cache"))


@pytest.fixture
def export(pristine, tmp_path):
    return Path(shutil.copytree(pristine / "export", tmp_path / "export"))


@pytest.fixture
def run_dir(pristine, tmp_path):
    return Path(shutil.copytree(pristine / "runs" / "run", tmp_path / "runs" / "run"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- caches


def test_an_interrupted_build_is_refused_for_training_unless_allowed(
    pristine, tmp_path, monkeypatch, capsys
):
    cfg = build_config(overrides=settings(tmp_path / "runs"))
    real, calls = cache_build.compute_shard, {"n": 0}

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_build, "compute_shard", dies_on_second)
    out = tmp_path / "partial"
    with pytest.raises(OSError):
        cache_build.build_cache(teacher_of(cfg), cfg, out, shard_size=8, workers=0, progress=False)
    monkeypatch.undo()

    capsys.readouterr()
    assert main(["cache", "verify", str(out)]) == 1
    assert "8 of 24 clips cached" in capsys.readouterr().out
    code, err = train_from(capsys, out, tmp_path / "runs")
    line = one_line_error(code, err, str(out), "--allow-incomplete")
    assert "8 of 24 clips cached" in line
    code, err = train_from(capsys, out, tmp_path / "runs2", "--allow-incomplete")
    assert code == 0, err


def test_verify_reports_an_unfinished_build(pristine, tmp_path, monkeypatch, capsys):
    cfg = build_config(overrides=settings(tmp_path / "runs"))
    monkeypatch.setattr(
        cache_build, "compute_shard", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    out = tmp_path / "none"
    with pytest.raises(KeyboardInterrupt):
        cache_build.build_cache(teacher_of(cfg), cfg, out, shard_size=8, workers=0, progress=False)
    capsys.readouterr()
    assert main(["cache", "verify", str(out)]) == 1
    assert "0 of 24 clips cached" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [0, 1])
def test_a_flipped_latent_byte_stops_training_before_a_loss(cache, tmp_path, capsys, workers):
    shard = cache / "shard_00001.safetensors"
    flip_byte(shard, shard.stat().st_size - 10)
    code, err = train_from(capsys, cache, tmp_path / "runs", "--set", f"data.num_workers={workers}")
    line = one_line_error(code, err, "shard_00001.safetensors", "checksum")
    assert "salt cache verify" in line
    metrics = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) < 6  # the step holding the damaged row never ran


def test_rows_dropped_from_a_shard_record_are_caught_on_open(cache, tmp_path, capsys):
    record = cache / "shard_00000.json"
    data = json.loads(record.read_text())
    data["samples"] = data["samples"][:5]
    record.write_text(json.dumps(data))
    assert any("shard_00000.safetensors: latents [8," in p for p in verify_cache(cache))
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "shard_00000.safetensors", "5 rows")


@pytest.mark.parametrize("damage", ["truncate", "delete", "header"])
def test_a_damaged_shard_file_is_named(cache, tmp_path, capsys, damage):
    shard = cache / "shard_00002.safetensors"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "delete":
        shard.unlink()
    else:
        flip_byte(shard, 3)  # the header length
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "shard_00002.safetensors")
    code, err = run_cli(capsys, "cache", "verify", str(cache))
    assert code == 1


def test_a_truncated_index_names_itself(cache, tmp_path, capsys):
    index = cache / "cache.json"
    index.write_text(index.read_text()[:40])
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "cache.json", "not valid JSON")
    code, err = run_cli(capsys, "cache", "verify", str(cache))
    one_line_error(code, err, "cache.json")


def test_an_edited_latent_shape_fails_before_training(cache, tmp_path, capsys):
    index = cache / "cache.json"
    data = json.loads(index.read_text())
    data["meta"]["latent_shape"][0] += 1
    index.write_text(json.dumps(data))
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "cache.json", "latent_shape")
    assert not (tmp_path / "runs" / "run" / "metrics.jsonl").exists()


def test_first_layout_rows_out_of_range_are_refused(cache, tmp_path, capsys):
    built = LatentCache(cache)
    samples, shards = [], []
    for number, shard in enumerate(built.shards):
        for row, sample in enumerate(shard.samples):
            samples.append({**sample, "shard": number, "row": row})
        shards.append({"file": shard.file, "rows": shard.rows, "sha256": shard.sha256})
        (cache / shard.record_path).unlink()
    samples[3]["row"] = 50  # beyond the shard's 8 rows
    meta = {**built.meta, "data_spec": "synthetic:24", "data_root": None, "data_kind": "synthetic"}
    index = {"format": "salt-latent-cache", "version": 1, "meta": meta, "shards": shards}
    (cache / "index.json").write_text(json.dumps({**index, "samples": samples, "skipped": []}))
    (cache / "cache.json").unlink()
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "index.json", "rows")


def test_stale_temp_files_of_a_killed_shard_write_are_removed(pristine, tmp_path):
    cfg = build_config(overrides=settings(tmp_path / "runs"))
    out = tmp_path / "c"
    out.mkdir()
    stale = out / ".shard_00000.safetensors.salt-abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    cache_build.build_cache(teacher_of(cfg), cfg, out, shard_size=8, workers=0, progress=False)
    assert not stale.exists() and verify_cache(out) == []


# ----------------------------------------------------------------------------- exports


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda c: "{not json", ("config.json", "not valid JSON")),
        (lambda c: {**c, "image_size": "abc"}, ("config.json", "image_size")),
        (lambda c: {k: v for k, v in c.items() if k != "num_frames"}, ("num_frames", "missing")),
        (lambda c: {**c, "mean": [0, 0]}, ("config.json", "mean", "3 finite numbers")),
        (lambda c: {**c, "std": [0, 0, 0]}, ("config.json", "std", "> 0")),
        (lambda c: {**c, "patch_size": 7}, ("image_size", "multiple of patch_size")),
        (lambda c: {**c, "version": 99}, ("config.json", "version 99", "upgrade")),
    ],
)
def test_export_config_fields_are_validated(export, capsys, edit, names):
    config = export / "config.json"
    edited = edit(json.loads(config.read_text()))
    config.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(ValueError) as info:
        VideoEncoder.from_pretrained(export)
    assert all(name in str(info.value) for name in names), str(info.value)
    code, err = run_cli(capsys, "eval", "probes", str(export), "--videos", "4")
    one_line_error(code, err, *names)


def test_a_flipped_weight_byte_fails_the_export_checksum(export, capsys):
    weights = export / "model.safetensors"
    flip_byte(weights, weights.stat().st_size - 100)
    with pytest.raises(ValueError, match="model.safetensors does not match the checksum"):
        VideoEncoder.from_pretrained(export)


def test_a_truncated_export_without_a_checksum_names_its_file(export, capsys):
    config = export / "config.json"
    data = json.loads(config.read_text())
    del data["weights_sha256"]  # an export written before checksums
    config.write_text(json.dumps(data))
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors"):
        VideoEncoder.from_pretrained(export)
    code, err = run_cli(capsys, "eval", "probes", str(export), "--videos", "4")
    one_line_error(code, err, "model.safetensors")


class _Payload:
    """Unpickling this would create a marker file: proof that nothing ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_a_pickle_with_code_is_refused_everywhere_and_never_runs(run_dir, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"student": _Payload(str(marker))}))
    out = str(tmp_path / "out")
    commands = [
        ("train", "--resume", str(evil), "--no-progress"),
        ("export", str(evil), "--out", out),
        ("eval", "probes", str(evil), "--videos", "4"),
        (
            "train",
            "--dry-run",
            *set_flags(settings(tmp_path, **{"teacher.spec": f"encoder:{evil}"})),
        ),
    ]
    for argv in commands:
        code, err = run_cli(capsys, *argv)
        one_line_error(code, err, "evil.pt")
    # an older-layout cache whose latents file is such a pickle
    legacy, videos = tmp_path / "legacy", tmp_path / "videos"
    (legacy / "train").mkdir(parents=True)
    shutil.copy(evil, legacy / "train" / "v0.pt")
    meta = {"latent_shape": [8, 24], "video_ids": ["v0"], "split": "train"}
    (legacy / "train" / "metadata.json").write_text(json.dumps(meta))
    write_video(videos / "v0.mp4", n=20, seed=0)
    code, err = run_cli(
        capsys,
        "cache",
        "import",
        str(legacy),
        "--data",
        str(videos),
        "--out",
        out,
        *set_flags(GEOMETRY),
    )
    one_line_error(code, err, "v0.pt", "more than tensors")
    assert not marker.exists()


def test_encode_file_on_a_text_file_names_it(export, tmp_path):
    from salt.video import VideoDecodeError

    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    encoder = VideoEncoder.from_pretrained(export)
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        encoder.encode_file(text)


# ----------------------------------------------------------------------------- writes


@pytest.mark.parametrize("fault", ["full", "read-only", "torch-full"])
def test_unwritable_outputs_are_one_line_and_leave_no_temp_files(
    run_dir, tmp_path, capsys, monkeypatch, fault
):
    import salt.io

    def failing(fd):
        if fault == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        if fault == "read-only":
            raise OSError(errno.EROFS, "Read-only file system")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(salt.io.os, "fsync", failing)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(out))
    line = one_line_error(code, err, str(out / "model.safetensors"))
    assert ("no space left" in line) if fault != "read-only" else ("Read-only" in line)
    assert not list(out.glob(".*.tmp"))


def test_written_files_follow_the_umask(export):
    mode = (export / "model.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# ----------------------------------------------------------------------------- runs


def test_a_torn_metrics_line_does_not_block_resume(run_dir, capsys, caplog):
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 5, "lo')
    code, err = run_cli(capsys, "train", "--resume", str(run_dir), "--no-progress", "--steps", "6")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_restart_without_checkpoints_starts_clean(run_dir, tmp_path, capsys):
    shutil.rmtree(run_dir / "checkpoints")  # killed before its first checkpoint
    (run_dir / "checkpoints").mkdir()
    stale = run_dir / "checkpoints" / ".step_00000004.pt.salt-x1y2.tmp"
    stale.write_bytes(b"x" * 4096)
    overrides = settings(run_dir.parent, **{"train.steps": 2})
    code, err = run_cli(capsys, "train", "--no-progress", *set_flags(overrides))
    assert code == 0, err
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2] and not stale.exists()


def test_dry_run_decodes_and_finds_missing_files(tmp_path, capsys):
    fake = tmp_path / "fake"
    fake.mkdir()
    for i in range(3):
        (fake / f"clip{i}.mp4").write_text("not a video")
    flags = set_flags({k: v for k, v in settings(tmp_path).items() if k != "data.spec"})
    code, err = run_cli(capsys, "train", "--data", str(fake), "--dry-run", *flags)
    one_line_error(code, err, "clip0.mp4", "cannot be read")

    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"gone/{i}.mp4\n" for i in range(4)))
    code, err = run_cli(capsys, "train", "--data", str(manifest), "--dry-run", *flags)
    one_line_error(code, err, "4 of 4 videos are missing", "gone/0.mp4")


def test_a_misspelled_loss_reads_well(tmp_path, capsys):
    code, err = run_cli(
        capsys, "train", "--dry-run", *set_flags(settings(tmp_path, **{"loss.name": "msee"}))
    )
    line = one_line_error(code, err, "unknown loss 'msee'", "Did you mean 'mse'?")
    assert "unknown losse" not in line


# ----------------------------------------------------------------------------- more records


def test_a_copied_shard_record_and_bad_rows_are_caught(cache, tmp_path, capsys):
    shutil.copy(cache / "shard_00000.json", cache / "shard_00003.json")
    code, err = run_cli(capsys, "cache", "verify", str(cache))
    one_line_error(code, err, "shard_00003.json describes shard_00000.safetensors")
    (cache / "shard_00003.json").unlink()
    record = json.loads((cache / "shard_00001.json").read_text())
    del record["samples"][2]["view"]
    (cache / "shard_00001.json").write_text(json.dumps(record))
    assert any("shard_00001.json: row 2 has no valid view" in p for p in verify_cache(cache))
    code, err = train_from(capsys, cache, tmp_path / "runs")
    one_line_error(code, err, "shard_00001.json: row 2")


def test_one_damaged_cache_does_not_hide_the_others(cache, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    (home / "latents").mkdir(parents=True)
    shutil.copytree(cache, home / "latents" / "good")
    shutil.copytree(cache, home / "latents" / "bad")
    (home / "latents" / "bad" / "cache.json").write_text('{"format": "salt-latent-cache"}')
    monkeypatch.setenv("SALT_CACHE_DIR", str(home))
    capsys.readouterr()
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "24 clips" in out and "bad" in out and "damaged" in out


def test_settings_that_do_not_fit_a_checkpoint_leave_the_run_as_it_was(run_dir, capsys):
    before = (run_dir / "config.json").read_text()
    code, err = run_cli(
        capsys,
        "train",
        "--resume",
        str(run_dir),
        "--no-progress",
        "--steps",
        "6",
        "--set",
        "predictor.width=64",
    )
    one_line_error(code, err, "predictor", "build the model with the settings it was trained with")
    assert (run_dir / "config.json").read_text() == before


def test_an_export_whose_geometry_was_edited_is_named(export):
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps({**config, "patch_size": 8}))
    with pytest.raises(ValueError, match=r"model.safetensors does not fit this .*patch_embed"):
        VideoEncoder.from_pretrained(export)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"PK\x03\x04" + bytes(64)])
def test_a_broken_pt_file_is_one_line(tmp_path, capsys, content):
    bad = tmp_path / "step_00000001.pt"
    bad.write_bytes(content)
    code, err = run_cli(capsys, "export", str(bad), "--out", str(tmp_path / "out"))
    one_line_error(code, err, "step_00000001.pt", "not a readable torch file")


def test_output_paths_that_are_files_are_named(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    code, err = run_cli(capsys, "export", str(run_dir), "--out", str(taken / "enc"))
    one_line_error(code, err, "is a file, not a folder")
    overrides = settings(taken, **{"train.steps": 1})
    code, err = run_cli(capsys, "train", "--no-progress", *set_flags(overrides))
    one_line_error(code, err, "the run folder", "is a file, not a folder")


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("eval", "probes", "x", "--videos", "0"), ("--videos", "a positive integer")),
        (("cache", "build", "--teacher", "pixels", "--shard-size", "0"), ("--shard-size",)),
        (("eval", "classify", "x", "--lr", "-1"), ("--lr", "a finite number > 0")),
    ],
)
def test_counts_and_rates_are_checked_by_the_parser(capsys, argv, names):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert all(name in err for name in names), err


def test_a_negative_loss_weight_is_refused(tmp_path, capsys):
    flags = [*set_flags(settings(tmp_path)), "--set", "loss.options.mse.weight=-1"]
    code, err = run_cli(capsys, "train", "--dry-run", *flags)
    one_line_error(code, err, "loss.options.mse.weight must be a finite number >= 0")


def test_a_dry_run_finds_data_smaller_than_one_batch(tmp_path, capsys):
    overrides = settings(tmp_path, **{"data.spec": "synthetic:2", "train.batch_size": 4})
    code, err = run_cli(capsys, "train", "--dry-run", *set_flags(overrides))
    one_line_error(code, err, "2 clips, fewer than one batch of 4", "train.batch_size")
