"""The teacher-latent cache: build, resume, verify, splits, cached teacher, view lock, older
layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from older_cache import write_older_cache
from safetensors.torch import load_file
from videos import write_corrupt, write_video

import salt.cache.build as cache_build
from salt.cache import LatentCache, resolve_cache, verify_cache
from salt.cache.build import CacheBuildError
from salt.cli import main
from salt.config import apply_overrides, build_config
from salt.data import SyntheticClips, normalize_clips
from salt.models import teacher_of
from salt.registry import teachers
from salt.train import train
from salt.video import ViewMismatchError


def build_cache(cfg, out, **kwargs):
    """Build with the config's own (live) teacher."""
    return cache_build.build_cache(teacher_of(cfg), cfg, out, **kwargs)


GEOMETRY = {"data.num_frames": 4, "data.image_size": 32, "data.frame_step": 2}


@pytest.fixture
def cfg(tiny_overrides):
    return build_config(overrides={**tiny_overrides, **GEOMETRY, "data.spec": "synthetic:24"})


@pytest.fixture
def video_dir(tmp_path):
    root = tmp_path / "videos"
    for i in range(4):
        write_video(root / "push" / f"clip{i}.mp4", n=20, seed=i)
    for i in range(2):
        write_video(root / "pull" / f"clip{i}.webm", n=12, seed=10 + i)
    return root


def test_build_writes_shards_index_and_teacher_latents(cfg, tmp_path):
    out = tmp_path / "c"
    built = build_cache(cfg, out, shard_size=10, workers=0, progress=False)
    meta = built.meta
    assert len(built) == 24 and [s.rows for s in built.shards] == [10, 10, 4]
    assert [s.split for s in built.shards] == ["train"] * 3
    assert meta["teacher"] == "pixels" and meta["teacher_dim"] == 3 * 2 * 16 * 16
    assert (meta["teacher_plugin"], meta["teacher_version"]) == ("teachers", "0.1.0")
    assert meta["latent_shape"] == [2 * 2 * 2, 1536] and meta["grid"] == [2, 2, 2]
    assert (meta["num_frames"], meta["image_size"], meta["frame_step"], meta["dtype"]) == (
        4,
        32,
        2,
        "float16",
    )
    for key in ("created", "salt_version", "mean", "std"):
        assert key in meta
    assert built.splits["train"]["data_spec"] == "synthetic:24"
    assert built.splits["train"]["complete"] and built.splits["train"]["total"] == 24
    shard = load_file(out / built.shards[0].file)
    assert shard["latents"].shape == (10, 8, 1536) and shard["latents"].dtype == torch.float16

    teacher = teacher_of(cfg)
    dataset = SyntheticClips(cfg.data, "train", 24)
    train_split = built.split("train")
    for i in (0, 13, 23):
        clip = dataset[i].video[None]
        expected = teacher(normalize_clips(clip, cfg.data.mean, cfg.data.std))[0]
        assert torch.allclose(train_split.latents(i).float(), expected, atol=2e-2)
        assert train_split.view(i).source == f"synthetic/{i}"
        assert train_split.view(i).frames == (0, 2, 4, 6)
    assert verify_cache(out) == []


def test_an_interrupted_build_resumes_where_it_stopped(cfg, tmp_path, monkeypatch):
    out = tmp_path / "c"
    real = cache_build.compute_shard
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_build, "compute_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_cache(cfg, out, shard_size=8, workers=0, progress=False)
    first = LatentCache(out)
    assert len(first.shards) == 2 and len(first) == 16
    assert not first.splits["train"]["complete"]
    assert any("16 of 24 clips cached" in p for p in verify_cache(out))
    monkeypatch.setattr(cache_build, "compute_shard", real)
    done = build_cache(cfg, out, shard_size=8, workers=0, progress=False)
    assert len(done) == 24 and [s.sha256 for s in done.shards[:2]] == [
        s.sha256 for s in first.shards
    ]
    assert done.split("train").rows[16:] == [(2, row) for row in range(8)]
    assert verify_cache(out) == []
    with pytest.raises(CacheBuildError, match="other settings.*dtype"):
        build_cache(cfg, out, dtype="bfloat16", workers=0, progress=False)


def test_verify_catches_a_corrupted_shard(cfg, tmp_path, capsys):
    out = tmp_path / "c"
    build_cache(cfg, out, shard_size=12, workers=0, progress=False)
    assert main(["cache", "verify", str(out)]) == 0
    shard = out / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["cache", "verify", str(out)]) == 1
    out_text = capsys.readouterr().out
    assert "shard_00001.safetensors: checksum mismatch" in out_text
    assert "shard_00000" not in out_text


def test_named_caches_live_under_salt_cache_dir(cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SALT_CACHE_DIR", str(tmp_path / "home"))
    args = [
        "cache",
        "build",
        "--teacher",
        "pixels",
        "--data",
        "synthetic:24",
        "--name",
        "syn",
        "--workers",
        "0",
        "--no-progress",
        "--profile",
        "recipe",
    ]
    for key, value in GEOMETRY.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    assert "train with: salt train --teacher cached:syn" in capsys.readouterr().out
    assert resolve_cache("syn") == tmp_path / "home" / "latents" / "syn"
    assert main(["cache", "list"]) == 0
    assert "syn" in capsys.readouterr().out
    assert main(["cache", "info", "syn"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 24 and info["teacher"] == "pixels"
    with pytest.raises(FileNotFoundError, match=r"no latent cache 'nope'.*caches there: syn"):
        resolve_cache("nope")


def test_cached_teacher_loads_no_model_and_training_falls(cfg, tmp_path):
    out = tmp_path / "c"
    build_cache(
        apply_overrides(cfg, {"teacher.spec": "random:vit_tiny"}), out, workers=0, progress=False
    )
    run_cfg = apply_overrides(
        cfg, {"teacher.spec": f"cached:{out}", "train.steps": 12, "optim.max_warmup_fraction": 0.25}
    )
    teacher = teachers.create(run_cfg.teacher.spec, geometry=run_cfg.geometry)
    assert list(teacher.parameters()) == [] and teacher.teacher_dim == 192
    result = train(run_cfg)
    losses = [
        json.loads(line)["loss"]
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_cache_geometry_must_match_the_training_clips(cfg, tmp_path):
    out = tmp_path / "c"
    build_cache(cfg, out, workers=0, progress=False)
    bad = apply_overrides(cfg, {"teacher.spec": f"cached:{out}", "data.num_frames": 8})
    with pytest.raises(
        ValueError, match="cached from 4-frame clips at 32px, but data.num_frames=8"
    ):
        teachers.create(bad.teacher.spec, geometry=bad.geometry)


def video_cfg(cfg, spec):
    return apply_overrides(cfg, {"data.spec": str(spec), "train.batch_size": 2})


def test_view_lock_from_videos_relocation_and_mismatch(cfg, video_dir, tmp_path):
    write_corrupt(video_dir / "push" / "broken.mp4")
    out = tmp_path / "c"
    built = build_cache(video_cfg(cfg, video_dir), out, views=2, workers=0, progress=False)
    assert len(built) == 12 and len(built.skipped) == 2  # both views of the corrupt file
    assert "broken.mp4" in built.skipped[0]
    split = built.split("train")
    starts = {split.view(i).source: [] for i in range(len(split))}
    for i in range(len(split)):
        starts[split.view(i).source].append(split.view(i).frames[0])
    assert all(len(set(s)) == 2 for s in starts.values())  # two distinct views per video

    run = apply_overrides(
        cfg, {"teacher.spec": f"cached:{out}", "train.steps": 2, "train.batch_size": 2}
    )
    train(apply_overrides(run, {"run.name": "a"}))  # no --data: the cache knows its root

    moved = tmp_path / "moved"
    shutil.move(str(video_dir), moved)
    with pytest.raises(ViewMismatchError, match="pass --data DIR"):
        train(apply_overrides(run, {"run.name": "b"}))
    train(apply_overrides(run, {"run.name": "c", "data.spec": str(moved)}))
    # The spec a user built with may be a manifest: its folder is where the videos are.
    manifest = moved / "videos.csv"
    manifest.write_text("".join(f"{p.relative_to(moved)}\n" for p in moved.rglob("*.mp4")))
    train(apply_overrides(run, {"run.name": "c2", "data.spec": str(manifest)}))
    with pytest.raises(ViewMismatchError, match="does not exist; give the folder"):
        train(apply_overrides(run, {"run.name": "c3", "data.spec": str(tmp_path / "nowhere")}))

    write_video(
        moved / "push" / "clip0.mp4", n=20, height=64, width=64, seed=0
    )  # re-encoded, new size
    with pytest.raises(
        ViewMismatchError, match=r"cache sample \d+: push/clip0.mp4: frames are 64x64"
    ):
        train(apply_overrides(run, {"run.name": "d", "data.spec": str(moved), "train.steps": 6}))


def test_stored_clips_train_without_the_videos(cfg, video_dir, tmp_path):
    out = tmp_path / "c"
    built = build_cache(video_cfg(cfg, video_dir), out, store_clips=True, workers=0, progress=False)
    from salt.data import VideoDataset
    from salt.video import discover

    decoded = VideoDataset(discover(str(video_dir)), video_cfg(cfg, video_dir).data, train=False)
    assert torch.equal(built.split("train").clip(3), decoded[3].video)
    shutil.rmtree(video_dir)
    result = train(
        apply_overrides(
            cfg, {"teacher.spec": f"cached:{out}", "train.steps": 2, "train.batch_size": 2}
        )
    )
    assert result.step == 2


def test_older_layout_caches_work_directly_and_through_import(
    cfg, video_dir, tmp_path, monkeypatch, capsys
):
    legacy = tmp_path / "old"
    latents = write_older_cache(legacy, video_dir, (8, 24))
    direct = apply_overrides(
        cfg,
        {
            "teacher.spec": f"cached:{legacy}",
            "data.spec": str(video_dir),
            "train.steps": 2,
            "train.batch_size": 2,
        },
    )
    teacher = teachers.create(direct.teacher.spec, geometry=direct.geometry)
    assert teacher.teacher_dim == 24
    assert train(direct).step == 2

    no_data = apply_overrides(direct, {"data.spec": "synthetic", "run.name": "x"})
    with pytest.raises(ValueError, match="pass --data DIR"):
        train(no_data)

    monkeypatch.setenv("SALT_CACHE_DIR", str(tmp_path / "home"))
    args = [
        "cache",
        "import",
        str(legacy),
        "--data",
        str(video_dir),
        "--name",
        "old",
        "--profile",
        "recipe",
    ]
    for key, value in GEOMETRY.items():
        args += ["--set", f"{key}={value}"]
    assert main(args) == 0
    imported = LatentCache(tmp_path / "home" / "latents" / "old").split("train")
    for i in range(len(imported)):
        assert torch.equal(imported.latents(i), latents[imported.sample(i)["video_id"]])
    assert verify_cache(imported.cache.path) == []
    after = apply_overrides(
        cfg,
        {"teacher.spec": "cached:old", "train.steps": 2, "train.batch_size": 2, "run.name": "imp"},
    )
    assert train(after).step == 2


def test_videos_to_videomae_cache_to_training_from_the_command_line(tmp_path, monkeypatch, capsys):
    """The issue's flow: mp4 + webm videos (one corrupt) -> cache with a VideoMAE teacher -> train."""
    from transformers import VideoMAEConfig, VideoMAEModel

    videos = tmp_path / "videos"
    for i in range(3):
        write_video(videos / f"a{i}.mp4", n=40, height=120, width=160, seed=i)
        write_video(videos / f"b{i}.webm", n=40, height=120, width=160, seed=10 + i)
    write_corrupt(videos / "broken.mp4")
    teacher_dir = tmp_path / "tiny-videomae"
    torch.manual_seed(0)
    VideoMAEModel(
        VideoMAEConfig(
            image_size=112,
            num_frames=8,
            tubelet_size=2,
            patch_size=16,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=96,
        )
    ).save_pretrained(teacher_dir)
    monkeypatch.setenv("SALT_CACHE_DIR", str(tmp_path / "home"))

    assert (
        main(
            [
                "cache",
                "build",
                "--teacher",
                f"videomae:{teacher_dir}",
                "--data",
                str(videos),
                "--name",
                "tiny",
                "--views",
                "4",
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "24 clips (train 24), latents (196, 48) float16, 4 unreadable videos skipped" in out
    assert main(["cache", "verify", "tiny"]) == 0
    assert (
        main(
            [
                "train",
                "--student",
                "vit_tiny",
                "--teacher",
                "cached:tiny",
                "--steps",
                "30",
                "--out",
                str(tmp_path / "runs"),
                "--run-name",
                "s",
                "--no-progress",
                "--set",
                "train.log_every=1",
                "--set",
                "data.num_workers=0",
            ]
        )
        == 0
    )
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "runs" / "s" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


def test_distill_on_a_cached_run_scores_the_val_split_never_the_training_clips(
    cfg, tmp_path, monkeypatch
):
    from salt.assemble import DataSource
    from salt.eval.distill import distill_loss

    out = tmp_path / "c"
    small = apply_overrides(cfg, {"data.spec": "synthetic:8"})
    build_cache(small, out, workers=0, progress=False)
    run = train(apply_overrides(small, {"teacher.spec": f"cached:{out}", "train.steps": 2})).run_dir
    with pytest.raises(ValueError, match=r"holds no 'val' split.*--split val"):
        distill_loss(run, batches=1)
    assert main(["eval", "distill", str(run), "--batches", "1"]) == 2

    build_cache(small, out, split="val", workers=0, progress=False)
    both = LatentCache(out)
    assert {s.split for s in both.shards} == {"train", "val"} and verify_cache(out) == []
    seen = []
    real = DataSource.held_out

    def spy(self):
        seen.append(real(self))
        return seen[-1]

    monkeypatch.setattr(DataSource, "held_out", spy)
    report = distill_loss(run, batches=2)
    (clips,) = seen
    assert clips.split.name == "val" and report.clips == 8 and "val split" in report.data
    train_videos = [SyntheticClips(small.data, "train", 8)[i].video for i in range(8)]
    for i in range(len(clips)):
        assert not any(torch.equal(clips[i].video, v) for v in train_videos)
        assert torch.equal(clips[i].targets, both.split("val").latents(i))


def test_writing_a_shard_touches_no_other_file(cfg, tmp_path):
    from salt.cache import write_shard

    out = tmp_path / "c"
    build_cache(cfg, out, shard_size=8, workers=0, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    latents = torch.zeros(1, 8, 1536, dtype=torch.float16)
    view = {"source": "synthetic/0", "frames": [0, 2, 4, 6], "crop": [0, 0, 32, 32]}
    record = write_shard(out, 3, "train", {"latents": latents}, [{"view": view, "label": 0}], [])
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(after) - set(before) == {"shard_00003.safetensors", "shard_00003.json"}
    assert all(after[name] == stamp for name, stamp in before.items())
    assert record.rows == 1 and LatentCache(out).shards[3].sha256 == record.sha256


def test_caches_in_the_first_layout_are_still_read_and_trained_from(cfg, tmp_path):
    """salt-vla 0.1 wrote one index.json holding every sample; such caches keep working."""
    out = tmp_path / "c"
    built = build_cache(cfg, out, shard_size=16, workers=0, progress=False)
    samples, shards = [], []
    for number, shard in enumerate(built.shards):
        for row, sample in enumerate(shard.samples):
            samples.append({**sample, "shard": number, "row": row})
        shards.append(
            {"file": shard.file, "rows": shard.rows, "skipped": 0, "sha256": shard.sha256}
        )
        (out / shard.record_path).unlink()
    meta = {**built.meta, **{k: built.splits["train"][k] for k in ("data_spec", "data_root")}}
    meta.update({"data_kind": "synthetic", "views_per_video": 1})
    index = {"format": "salt-latent-cache", "version": 1, "meta": meta}
    index.update({"shards": shards, "samples": samples, "skipped": []})
    (out / "index.json").write_text(json.dumps(index))
    (out / "cache.json").unlink()

    old = LatentCache(out)
    assert len(old) == 24 and list(old.splits) == ["train"] and verify_cache(out) == []
    assert torch.equal(old.split("train").latents(20), built.split("train").latents(20))
    run = apply_overrides(cfg, {"teacher.spec": f"cached:{out}", "train.steps": 2})
    assert train(run).step == 2


def test_older_layout_splits_and_a_cache_without_a_train_folder(video_dir, tmp_path):
    from salt.cache import LegacyCache, MissingSplitError

    legacy = tmp_path / "old"
    write_older_cache(legacy, video_dir, (8, 24))
    (legacy / "train").rename(legacy / "validation")
    cache = LegacyCache(legacy)
    assert list(cache.splits) == ["validation"]
    assert cache.split("train").name == "validation"  # as before splits: its first folder
    with pytest.raises(MissingSplitError, match=r"holds no 'val' split \(it has: validation\)"):
        cache.split("val")


def test_a_build_refuses_shards_left_without_their_index(cfg, tmp_path):
    out = tmp_path / "c"
    build_cache(cfg, out, shard_size=12, workers=0, progress=False)
    (out / "cache.json").unlink()
    with pytest.raises(CacheBuildError, match="holds shards but no cache.json"):
        build_cache(cfg, out, workers=0, progress=False)


def test_a_two_process_build_equals_one_process_and_resumes_after_a_kill(tmp_path):
    """torchrun, 2 CPU processes: each writes every other shard of the same plan; one dies
    after its first shard; the same command completes it; every shard (bytes and record)
    is the one a single process writes."""
    args = ["cache", "build", "--teacher", "random:vit_tiny", "--data", "synthetic:22"]
    args += ["--shard-size", "4", "--workers", "0", "--no-progress", "--profile", "demo"]
    for key, value in GEOMETRY.items():
        args += ["--set", f"{key}={value}"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0

    def torchrun(die_on_rank: str = "") -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DIE_ON_RANK": die_on_rank}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", "2", str(Path(__file__).parent / "ddp_cache.py")]
        command += [*args, "--out", str(tmp_path / "two")]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    killed = torchrun(die_on_rank="1")
    assert killed.returncode != 0
    partial = LatentCache(tmp_path / "two")
    assert 0 < len(partial.shards) < 6 and partial.incomplete()
    done = torchrun()
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("cache ") == 1  # rank 0 alone reports

    one, two = LatentCache(tmp_path / "one"), LatentCache(tmp_path / "two")
    assert verify_cache(two.path) == [] and not two.incomplete()
    assert [s.to_dict() for s in two.shards] == [s.to_dict() for s in one.shards]
    assert [s.rows for s in one.shards] == [4, 4, 4, 4, 4, 2]
    for shard in one.shards:
        assert (two.path / shard.file).read_bytes() == (one.path / shard.file).read_bytes()
    assert two.splits == one.splits
