"""benchmarks/appearance_probe.py: motion-natural's held-out clips relabelled by the photo a
surface is cut from, scored with the quick start's probe."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from salt.config import apply_overrides
from salt.natural import PHOTOS
from salt.train import train

pytestmark = pytest.mark.usefixtures("one_thread_module")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "appearance_probe.py"
GEOMETRY = (4, 32, 4)  # frames, pixels, frame step


def load_script():
    spec = importlib.util.spec_from_file_location("appearance_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def probe():
    return load_script()


def test_labels_are_the_photos_painted_and_the_motion_is_the_benchmarks(probe):
    clips = probe.clips(GEOMETRY, "test", 40)
    background = probe.PhotoLabels(clips, "background")
    obj = probe.PhotoLabels(clips, "object")
    motion = probe.PhotoLabels(clips, "motion")
    for i in range(len(clips)):
        params = clips.generator.params(i)
        assert background.label(i) == params["background"]["texture"]["photo"]
        assert obj.label(i) == params["a"]["texture"]["photo"]
        # Relabelling leaves the class rule alone: motion's label is clip i's class.
        assert motion.label(i) == clips.generator.label(i) == i % 14
        # A clip's surfaces are cut from different photos.
        assert background.label(i) != obj.label(i)
    sample = background[3]
    assert sample.label == background.label(3)
    assert np.array_equal(sample.video.numpy(), clips.getitem(3).video.numpy())
    # Photos are drawn independently of the class: 40 clips use most of the 14.
    assert len({background.label(i) for i in range(40)}) >= 10
    # One dataset per geometry and split: every label and encoder reads the same drawn clips.
    assert probe.clips(GEOMETRY, "test", 40) is clips


def test_prints_a_row_per_encoder_with_each_labels_top1(probe, tiny_config, capsys):
    run = train(
        apply_overrides(
            tiny_config,
            {"train.steps": 2, "data.spec": "motion-natural:16", "data.image_size": 32},
        )
    ).run_dir
    args = [str(run), f"random:{run}", "--labels", "background,motion"]
    assert (
        probe.main([*args, "--train", "32", "--test", "16", "--epochs", "1", "--seeds", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "| encoder | background | motion |" in out
    rows = re.findall(r"^\| (\S+) \| (.+) \|$", out, re.M)[2:]  # past the header
    assert [name for name, _ in rows] == [str(run), f"random:{run}"]
    for _, cells in rows:
        scores = [float(m) for m in re.findall(r"(\d\.\d{3}) \+- ", cells)]
        assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
        # 16 test clips: every top-1 is a multiple of 1/16, averaged over 2 seeds.
        assert all(abs(s * 32 - round(s * 32)) < 0.02 for s in scores)
    assert f"chance: {1 / len(PHOTOS):.3f} (photos)" in out


def test_an_unknown_label_is_refused_naming_the_choices(probe, capsys):
    with pytest.raises(SystemExit):
        probe.main(["run", "--labels", "colour"])
    assert "unknown ['colour']" in capsys.readouterr().err


def test_per_class_splits_saved_hits_by_the_clips_class(probe, tmp_path, capsys):
    from salt.motion import CLASSES

    # 42 test clips (3 a class), 2 seeds: seed 0 gets every "right" clip (class 0) and the
    # first "pan-left" one (class 13), seed 1 only the "right" ones.
    hits = [[int(i % 14 == 0 or i == 13) for i in range(42)], [int(i % 14 == 0) for i in range(42)]]
    report = {"classes": list(CLASSES), "views": 1, "data": "motion-natural:84"}
    report["scores"] = {"attentive": {"hits": hits}}
    (tmp_path / "quickstart.json").write_text(json.dumps({"classify": {"teacher": report}}))
    (tmp_path / "classify.json").write_text(json.dumps({"enc": report}))
    scores = probe.class_scores(report)
    assert scores[0] == 1.0 and scores[13] == pytest.approx(1 / 6) and sum(scores[1:13]) == 0
    paths = [str(tmp_path / "quickstart.json"), str(tmp_path / "classify.json")]
    assert probe.main(["--per-class", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"| class | {paths[0]}:teacher | {paths[1]}:enc |"
    assert out[2] == "| right | 1.000 | 1.000 |" and out[-1] == "| pan-left | 0.167 | 0.167 |"
    # Another benchmark's classes cannot be split by index: refused, naming the data.
    other = {**report, "classes": ["a", "b"], "data": "clips/"}
    (tmp_path / "other.json").write_text(json.dumps({"enc": other}))
    with pytest.raises(SystemExit):
        probe.main(["--per-class", str(tmp_path / "other.json")])
    assert "'clips/' is not the built-in motion benchmark" in capsys.readouterr().err
