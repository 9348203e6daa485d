"""LeRobot datasets (``lerobot:PATH[:CAMERA]``): both layouts, clips inside episodes,
timestamps, and train -> cache -> evaluate from the command line."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from lerobot_data import CAMERAS, CODEC, EPISODE_LEVEL, FPS, LENGTHS, write_v2, write_v3

from salt.cli import main
from salt.config import DataConfig
from salt.data import VideoDataset
from salt.video import discover

pytestmark = pytest.mark.usefixtures("one_thread_module")

STARTS = np.cumsum((0, *LENGTHS))  # each episode's first frame in a v3 file


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    return {"v2": write_v2(root / "v2"), "v3": write_v3(root / "v3")}


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_both_layouts_give_one_source_per_episode_and_camera(datasets, layout):
    root = datasets[layout]
    every = discover(f"lerobot:{root}")
    assert every.kind == "lerobot" and len(every.records) == len(LENGTHS) * len(CAMERAS)
    assert discover(str(root)).records == every.records  # the folder alone reads the same
    top = discover(f"lerobot:{root}:top")
    assert [r.source.count("images.top") for r in top.records] == [1] * len(LENGTHS)
    assert discover(f"lerobot:{root}:observation.images.wrist").records[0].source.count("wrist")
    spans = [(r.start, r.end) for r in top.records]
    if layout == "v3":  # one file: each episode is its span in it
        assert {r.source for r in top.records} == {top.records[0].source}
        assert spans == [(STARTS[e] / FPS, STARTS[e + 1] / FPS) for e in range(len(LENGTHS))]
    else:
        assert len({r.source for r in top.records}) == len(LENGTHS)
        assert spans == [(0.0, n / FPS) for n in LENGTHS]
    with pytest.raises(ValueError, match="has no camera 'side'; it has: observation.images.top"):
        discover(f"lerobot:{root}:side")


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_clips_never_cross_an_episode(datasets, layout):
    # 8 frames 3 apart span 22 frames: longer than episode 1 (14), shorter than episode 2 (26)
    data = DataConfig(
        spec=f"lerobot:{datasets[layout]}:top", num_frames=8, frame_step=3, image_size=32
    )
    dataset = VideoDataset(discover(data.spec), data, train=True, seed=1)
    starts = set()
    for epoch in range(4):
        for index in range(len(dataset)):
            sample = dataset.getitem(index, epoch)
            assert sample.error is None, sample.error
            frames = sample.view["frames"]
            first = STARTS[index] if layout == "v3" else 0
            assert first <= min(frames) and max(frames) < first + LENGTHS[index], (index, frames)
            starts.add((index, frames[0]))
            corner = sample.video[:, :, :6, :6].float().mean().item()  # away from the bar
            assert abs(corner - EPISODE_LEVEL[index]) < 12, (index, corner)
    assert len({s for i, s in starts if i == 2}) > 1  # the long episode's start varies


def test_a_damaged_episode_table_is_named(datasets, tmp_path):
    import shutil

    root = shutil.copytree(datasets["v2"], tmp_path / "ds")
    (root / "meta" / "episodes.jsonl").write_text('{"episode_index": 0, "length": 20}\n{"oops"\n')
    with pytest.raises(ValueError, match="episodes.jsonl line 2 is not an episode record"):
        discover(f"lerobot:{root}")
    (root / "meta" / "info.json").write_text(json.dumps({"fps": 10}))
    with pytest.raises(ValueError, match="info.json is not a LeRobotDataset info.json"):
        discover(f"lerobot:{root}")


def test_an_episode_table_without_a_camera_column_is_named(datasets, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    root = shutil.copytree(datasets["v3"], tmp_path / "ds")
    table_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    column = f"videos/{CAMERAS[0]}/from_timestamp"
    pq.write_table(pq.read_table(table_file).drop([column]), table_file)
    with pytest.raises(
        ValueError, match=f"episode 0 in meta/episodes/ lacks or garbles '{column}'"
    ):
        discover(f"lerobot:{root}")
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(ValueError, match="codebase_version is 'v1.6'; salt reads"):
        discover(str(root))


def test_train_cache_and_evaluate_from_a_lerobot_dataset(datasets, tmp_path, capsys):
    spec = f"lerobot:{datasets['v3']}"
    sets = []
    for key, value in {
        "data.num_frames": 4,
        "data.frame_step": 2,
        "data.image_size": 32,
        "data.num_workers": 0,
        "student.name": "vit_tiny",
        "predictor.width": 32,
        "predictor.depth": 1,
        "predictor.heads": 2,
        "train.batch_size": 2,
        "train.peak_tflops": 1.0,
    }.items():
        sets += ["--set", f"{key}={value}"]
    common = ["--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu", *sets]

    assert main(["train", "--data", f"{spec}:top", "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    assert "3 clips" in out
    # The dry run names the backend `auto` opened each codec with (here, the file's one).
    codec = "av1" if CODEC == "libsvtav1" else "h264"
    assert re.search(rf"video decoding auto: {codec} by \w+ \(1 file\)", out), out
    assert (
        main(
            [
                "train",
                "--data",
                spec,
                "--teacher",
                "pixels",
                "--steps",
                "3",
                "--run-name",
                "live",
                *common,
            ]
        )
        == 0
    )
    cache = tmp_path / "cache"
    build = ["cache", "build", "--teacher", "pixels", "--data", spec, "--out", str(cache)]
    assert main([*build, "--workers", "0", "--no-progress", *sets]) == 0
    assert main(["cache", "verify", str(cache)]) == 0
    assert (
        main(
            [
                "train",
                "--teacher",
                f"cached:{cache}",
                "--steps",
                "3",
                "--run-name",
                "cached",
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    run = tmp_path / "runs" / "cached"
    assert main(["eval", "probes", str(run), "--data", spec, "--videos", "6", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["encoder"]
    assert report["num_videos"] == 6 and report["tasks"]
    assert all(0.0 <= t["accuracy"] <= 1.0 for t in report["tasks"].values())


def test_a_repo_id_is_read_from_the_lerobot_cache_offline(datasets, tmp_path, monkeypatch):
    """``lerobot:ORG/NAME`` is LeRobot's own download, found where LeRobotDataset puts it."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "lerobot-home"
    shutil.copytree(datasets["v3"], home / "acme" / "pick-cube")
    monkeypatch.setenv("HF_LEROBOT_HOME", str(home))
    cached = discover("lerobot:acme/pick-cube:top")
    assert cached.kind == "lerobot" and len(cached.records) == len(LENGTHS)
    assert cached.root == (home / "acme" / "pick-cube").resolve()
    # Without HF_LEROBOT_HOME, LeRobot's default: $HF_HOME/lerobot.
    monkeypatch.delenv("HF_LEROBOT_HOME")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    shutil.copytree(datasets["v2"], tmp_path / "hf" / "lerobot" / "acme" / "pick-cube")
    assert len(discover("lerobot:acme/pick-cube").records) == len(LENGTHS) * len(CAMERAS)
    # A folder of that name here wins over the cache.
    shutil.copytree(datasets["v3"], tmp_path / "acme" / "pick-cube")
    assert discover("lerobot:acme/pick-cube").root == (tmp_path / "acme" / "pick-cube").resolve()
    with pytest.raises(FileNotFoundError, match=r"nor is repo 'acme/absent' in the LeRobot cache"):
        discover("lerobot:acme/absent")
