"""The silent edges: input that once gave a quietly wrong result now gives one line.

Every case runs the command a user would run and asserts the outcome: exit 2 (1 for
``cache verify``'s findings) with one line that names the file or field and the fix - never
a traceback, never a result computed from something other than what was named - and that
the files it was given are left as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from test_faults import one_line_error, set_flags
from videos import write_video

import salt.cache.build as cache_build
from salt.cli import main
from salt.config import build_config
from salt.export import encoder_config, write_export
from salt.models import teacher_of
from salt.motion import MotionClasses
from salt.registry import students

pytestmark = pytest.mark.usefixtures("one_thread_module")

GEOMETRY = {"data.num_frames": 4, "data.image_size": 32, "data.frame_step": 2}


def settings(out: Path, **extra) -> dict:
    return {**TINY, **GEOMETRY, "run.out": str(out), "run.name": "run", **extra}


def dry_run(out: Path, **extra) -> list[str]:
    """``salt train --dry-run`` with the tiny settings and ``extra`` overrides."""
    return ["train", "--dry-run", *set_flags(settings(out, **extra))]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``salt ARGV``; the CLI must never raise."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) by path, with its SHA-256."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """An untrained vit_tiny export at 4x32: enough for commands that read an encoder."""
    cfg = build_config(overrides=settings(Path("unused")))
    model = students.create("vit_tiny", **cfg.geometry.model_kwargs())
    out = tmp_path_factory.mktemp("export") / "encoder"
    return write_export(out, model.state_dict(), encoder_config(cfg.to_dict()))


# --- a spec that names a layout without its required files -------------------------------


def _videos(folder: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        write_video(folder / name, n=12, height=32, width=32, seed=i)
    return folder


def test_a_lerobot_spec_without_its_info_json_is_refused_not_read_as_a_folder(tmp_path, capsys):
    plain = _videos(tmp_path / "plain", [f"videos/episode_{i}.mp4" for i in range(3)])
    partial = _videos(tmp_path / "partial", ["videos/chunk-000/top/episode_000000.mp4"])
    (partial / "meta").mkdir()
    (partial / "meta" / "episodes.jsonl").write_text('{"episode_index": 0, "length": 12}\n')
    before = {**snapshot(plain), **snapshot(partial)}
    for spec, named in ((f"lerobot:{plain}", "lerobot:"), (str(partial), "meta/episodes.jsonl")):
        code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": spec}))
        one_line_error(code, err, "meta/info.json is missing", named)
    assert {**snapshot(plain), **snapshot(partial)} == before
    assert not (tmp_path / "runs").exists()


def test_a_lerobot_info_json_without_a_known_version_is_refused(tmp_path, capsys):
    root = _videos(tmp_path / "ds", ["videos/chunk-000/top/episode_000000.mp4"])
    (root / "meta").mkdir()
    info = {"fps": 10, "video_path": "videos/{video_key}.mp4", "features": {}}
    info["features"]["top"] = {"dtype": "video"}
    (root / "meta" / "info.json").write_text(json.dumps(info))  # no codebase_version
    (root / "meta" / "episodes.jsonl").write_text('{"episode_index": 0, "length": 12}\n')
    before = snapshot(root)
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": str(root)}))
    one_line_error(code, err, "info.json", "codebase_version", "v2.x and v3.x")
    assert snapshot(root) == before and not (tmp_path / "runs").exists()


def test_an_ssv2_list_without_its_videos_is_refused(tmp_path, capsys):
    listing = tmp_path / "train.json"
    listing.write_text(json.dumps([{"id": "1", "template": "Pushing [something]"}]))
    (tmp_path / "videos").mkdir()  # the usual folder, but empty
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": str(listing)}))
    one_line_error(code, err, "train.json", "webm", str(tmp_path / "videos"))
    assert snapshot(tmp_path) == before and not (tmp_path / "runs").exists()


def test_a_manifest_header_without_a_path_column_is_not_read_as_a_video(tmp_path, capsys):
    _videos(tmp_path, ["a.mp4", "b.mp4"])
    manifest = tmp_path / "list.csv"
    manifest.write_text("video,label\na.mp4,push\nb.mp4,pull\n")  # 'video', not 'path'
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": str(manifest)}))
    one_line_error(code, err, "list.csv", "no 'path' column")
    assert snapshot(tmp_path) == before and not (tmp_path / "runs").exists()
    # A manifest row naming a video that is not there: named, not skipped silently.
    manifest.write_text("path,label\na.mp4,push\ngone.mp4,pull\n")
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": str(manifest)}))
    one_line_error(code, err, "1 of 2 videos are missing", str(tmp_path / "gone.mp4"))


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_a_lerobot_dataset_missing_each_required_file_is_named(layout, tmp_path, capsys):
    """A LeRobot dataset without its episode list (v2 ``episodes.jsonl``, v3 the episode
    parquet files), or without one of the videos they list, is a one-line error naming it;
    nothing in the dataset changes."""
    import lerobot_data

    write = lerobot_data.write_v2 if layout == "v2" else lerobot_data.write_v3
    root = write(tmp_path / "ds")
    listing = {"v2": "meta/episodes.jsonl", "v3": "meta/episodes/chunk-000/file-000.parquet"}
    kept = (root / listing[layout]).read_bytes()
    (root / listing[layout]).unlink()
    before = snapshot(root)
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": f"lerobot:{root}"}))
    named = "meta/episodes.jsonl is missing" if layout == "v2" else "no chunk-*/file-*.parquet"
    one_line_error(code, err, named)
    assert snapshot(root) == before and not (tmp_path / "runs").exists()
    (root / listing[layout]).write_bytes(kept)
    video = sorted((root / "videos").rglob("*.mp4"))[-1]
    video.unlink()
    before = snapshot(root)
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": f"lerobot:{root}"}))
    one_line_error(code, err, "videos are missing", str(video))
    assert snapshot(root) == before and not (tmp_path / "runs").exists()


def test_an_export_without_its_weights_is_named_as_incomplete(export, tmp_path, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((export / "config.json").read_bytes())
    before = snapshot(partial)
    code, _, err = run_cli(capsys, "eval", "classify", str(partial), "--data", "motion:28")
    one_line_error(code, err, str(partial), "no model.safetensors", "export it again")
    assert snapshot(partial) == before


def test_a_cache_folder_without_its_index_is_named_as_such(tmp_path, capsys):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "shard_00000.safetensors").write_bytes(b"\0" * 16)
    before = snapshot(folder)
    code, _, err = run_cli(
        capsys, *dry_run(tmp_path / "runs", **{"teacher.spec": f"cached:{folder}"})
    )
    one_line_error(code, err, "cache.json is missing", "shards")
    assert snapshot(folder) == before


def test_an_older_cache_with_several_splits_and_no_train_is_not_guessed(tmp_path, capsys):
    legacy = tmp_path / "old"
    for split in ("validation", "test"):
        (legacy / split).mkdir(parents=True)
        meta = {"latent_shape": [8, 24], "video_ids": ["v0"], "split": split}
        (legacy / split / "metadata.json").write_text(json.dumps(meta))
        torch.save({"latents": torch.zeros(8, 24)}, legacy / split / "v0.pt")
    videos = _videos(tmp_path / "videos", ["v0.mp4"])
    before = snapshot(legacy)
    out = tmp_path / "imported"
    argv = ["cache", "import", str(legacy), "--data", str(videos), "--out", str(out)]
    code, _, err = run_cli(capsys, *argv, *set_flags(GEOMETRY))
    one_line_error(code, err, "holds no 'train' split", "test, validation", "rename")
    assert snapshot(legacy) == before and not out.exists()


def test_a_clip_count_left_empty_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, *dry_run(tmp_path / "runs", **{"data.spec": "synthetic:"}))
    one_line_error(code, err, "'synthetic:'", "clip count")


# --- eval probes reads the data it is given ----------------------------------------------


def test_eval_probes_on_motion_probes_the_motion_benchmark(export, capsys):
    from salt.clipspec import ClipSpec, MotionSource, make_source

    source = make_source("motion:16", 32)
    assert isinstance(source, MotionSource) and len(source) == 16
    held_out = MotionClasses(length=16, image_size=32, seed=1)  # the val split's seed
    clip = source.clip(ClipSpec(3, step=2, position=0.0), 4)
    expected = torch.from_numpy(held_out.render(3, np.arange(4) * 2)).permute(0, 3, 1, 2)
    assert torch.equal(clip, expected)

    argv = ["eval", "probes", str(export), "--data", "motion:16", "--videos", "4"]
    code, out, err = run_cli(capsys, *argv, "--json", "--no-progress")
    assert code == 0, err
    report = json.loads(out)["encoder"]
    assert report["source"] == "motion:16"
    # time-arrow keeps the even classes: a reversed clip of 2k is a clip of class 2k + 1
    assert all(held_out.label(v) % 2 == 0 for v in report["tasks"]["time-arrow"]["videos"])


# --- labelled sets a top-1 score would mislead on ----------------------------------------


def test_a_labelled_set_of_one_class_is_refused(export, tmp_path, capsys):
    folder = tmp_path / "one"
    _videos(folder, ["train/push/a.mp4", "train/push/b.mp4", "test/push/c.mp4"])
    before = snapshot(folder)
    classify = ["eval", "classify", str(export), "--seeds", "1", "--epochs", "1", "--workers", "0"]
    code, _, err = run_cli(capsys, *classify, "--data", str(folder), "--no-progress")
    one_line_error(code, err, str(folder / "train"), "1 class (push)", "at least 2")
    code, _, err = run_cli(capsys, *classify, "--data", "motion:1", "--no-progress")
    one_line_error(code, err, "motion:1", "1 class (right)")
    # two classes, but --max-train keeps the first clips: all of one class folder
    two = _videos(tmp_path / "two", ["train/a/1.mp4", "train/a/2.mp4", "train/b/3.mp4"])
    _videos(two, ["test/a/4.mp4", "test/b/5.mp4"])
    argv = [*classify, "--data", str(two), "--max-train", "2", "--dry-run"]
    code, _, err = run_cli(capsys, *argv)
    one_line_error(code, err, "1 class (a)", "--max-train 2")
    assert snapshot(folder) == before


def test_test_classes_the_training_split_lacks_are_refused(export, tmp_path, capsys):
    train = _videos(tmp_path / "train", ["push/a.mp4", "pull/b.mp4"])
    test = _videos(tmp_path / "test", ["push/c.mp4", "lift/d.mp4"])
    argv = ["eval", "classify", str(export), "--train", str(train), "--test", str(test)]
    before = {**snapshot(train), **snapshot(test)}
    code, _, err = run_cli(capsys, *argv, "--dry-run")
    one_line_error(code, err, str(test), str(train), "(lift)")
    assert {**snapshot(train), **snapshot(test)} == before
    # the built-in data too: its few test clips show a direction its one training clip lacks
    code, _, err = run_cli(capsys, "eval", "classify", str(export), "--data", "synthetic:4")
    one_line_error(code, err, "synthetic:2, test split", "synthetic:4, train split")


# --- config files and run names ----------------------------------------------------------

REPEATS = {
    "yaml": ("optim:\n  lr: 0.001\n  min_lr: 0.0001\n  lr: 0.01\n", "line 4", "'optim'"),
    "json": ('{"optim": {"lr": 0.001,\n  "lr": 0.01}}\n', "line 2", "'optim'"),
    "toml": ("[optim]\nlr = 0.001\nlr = 0.01\n", "line 3", "[optim]"),
}


@pytest.mark.parametrize("suffix", sorted(REPEATS))
def test_a_config_file_that_repeats_a_key_is_refused(suffix, tmp_path, capsys):
    text, line, where = REPEATS[suffix]
    config = tmp_path / f"run.{suffix}"
    config.write_text(text)
    code, out, err = run_cli(capsys, "train", "--print-config", "--config", str(config))
    one_line_error(code, err, f"run.{suffix}", line, "key 'lr' appears twice", where)
    assert not out and config.read_text() == text


def test_a_toml_table_given_twice_is_refused(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[optim]\nlr = 0.001\n\n[train]\nsteps = 3\n\n[optim]\nmin_lr = 0.0\n")
    code, _, err = run_cli(capsys, "train", "--print-config", "--config", str(config))
    one_line_error(code, err, "run.toml", "line 7", "table [optim] appears twice")


@pytest.mark.parametrize(
    "name", [" lead", "trail ", "a/b", "a\\b", "..", "tab\tname", "bell\x07", "new\nline"]
)
def test_a_run_name_must_be_one_path_safe_folder_name(name, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--dry-run", "--out", str(out), "--run-name", name)
    one_line_error(code, err, "run.name", repr(name))
    assert not out.exists()


# --- cache verify: the index's geometry against its latents ------------------------------


@pytest.fixture(scope="module")
def pristine_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    cfg = build_config(overrides=settings(root / "runs", **{"data.spec": "synthetic:8"}))
    cache_build.build_cache(
        teacher_of(cfg), cfg, root / "cache", shard_size=8, workers=0, progress=False
    )
    return root / "cache"


@pytest.mark.parametrize(
    "field, value", [("image_size", 64), ("patch_size", 8), ("num_frames", 8), ("tubelet_size", 4)]
)
def test_cache_verify_checks_the_geometry_against_the_latent_shape(
    pristine_cache, field, value, tmp_path, capsys
):
    cache = Path(shutil.copytree(pristine_cache, tmp_path / "cache"))
    code, out, _ = run_cli(capsys, "cache", "verify", str(cache))
    assert code == 0 and "OK" in out
    index = json.loads((cache / "cache.json").read_text())
    index["meta"][field] = value  # metadata that contradicts the stored latents
    (cache / "cache.json").write_text(json.dumps(index))
    before = snapshot(cache)
    code, out, err = run_cli(capsys, "cache", "verify", str(cache))
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert code == 1 and failures, out + err
    assert any(f"{field} {value}" in line and "latent_shape" in line for line in failures), out
    code, _, err = run_cli(
        capsys, *dry_run(tmp_path / "runs", **{"teacher.spec": f"cached:{cache}"})
    )
    one_line_error(code, err, str(cache), f"{field} {value}")
    assert snapshot(cache) == before


# --- the weights-only refusal ------------------------------------------------------------


class _Plain:
    """A class a weights file never holds."""


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_a_refused_pickle_names_its_global_and_says_it_was_not_loaded(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"student": _Eval()}))  # a plain pickle, protocol 4
    saved = io.BytesIO()
    torch.save({"student": _Plain()}, saved)  # torch's zip format
    odd = tmp_path / "odd.pt"
    odd.write_bytes(saved.getvalue())
    for path, name in ((evil, "builtins.eval"), (odd, f"{__name__}._Plain")):
        before = snapshot(path)
        code, _, err = run_cli(capsys, "export", str(path), "--out", str(tmp_path / "out"))
        line = one_line_error(code, err, path.name, f"the unsafe global {name}", "not loaded")
        assert "weights_only" not in err and "allowlist" not in err and "trust" not in line
        assert snapshot(path) == before and not (tmp_path / "out").exists()


def test_an_empty_run_name_is_refused_not_generated(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--run-name", "", "--dry-run"])
    assert exit_.value.code == 2
    assert "--run-name: expected a run folder name, got ''" in capsys.readouterr().err


def test_classify_refuses_data_beside_train_and_test(capsys):
    argv = ["eval", "classify", "random:vit_tiny", "--dry-run", "--data", "motion:28"]
    code, _, err = run_cli(capsys, *argv, "--train", "a.csv", "--test", "b.csv")
    one_line_error(code, err, "either --data (motion:28) or --train/--test")
