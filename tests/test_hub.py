"""The Hub convention: a model card with every export, loading by repo id from the Hub's
cache offline (never the network), and push_to_hub (the upload itself faked)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from salt import VideoEncoder
from salt.cli import main
from salt.config import apply_overrides
from salt.train import train

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from conftest import TINY

    root = tmp_path_factory.mktemp("hub")
    from salt.config import build_config

    cfg = build_config(overrides={**TINY, "run.out": str(root / "runs"), "run.name": "r"})
    run = train(apply_overrides(cfg, {"train.steps": 2})).run_dir
    assert main(["export", str(run), "--out", str(root / "enc")]) == 0
    return root / "enc"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, with huggingface_hub in offline mode."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def put_in_cache(cache, repo_id: str, folder) -> None:
    """What `hf download` leaves: refs/main naming a snapshot folder holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, repo / "snapshots" / COMMIT)


def test_every_export_has_a_model_card_and_the_hub_config_fields(export):
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "salt_video_encoder"
    assert config["architectures"] == ["VideoEncoder"] and config["torch_dtype"] == "float32"
    assert config["data"] == "synthetic:64" and config["format"] == "salt-encoder"
    card = (export / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: salt-vla\n")
    assert "| architecture | vit_tiny |" in card
    assert "| tokens | 32 = grid 2x4x4 (tubelet 2, patch 16) |" in card
    assert "| teacher | `pixels` |" in card and "| steps | 2 |" in card
    assert "VideoEncoder.from_pretrained(" in card and "salt eval classify" in card
    # save_pretrained writes the same convention (here in bf16).
    out = export.parent / "resaved"
    VideoEncoder.from_pretrained(export, dtype=torch.bfloat16).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert "bfloat16" in (out / "README.md").read_text()


def test_from_pretrained_loads_a_repo_id_from_the_hub_cache_offline(export, offline_cache):
    put_in_cache(offline_cache, "robot-lab/salt-vit-tiny", export)
    from_hub = VideoEncoder.from_pretrained("robot-lab/salt-vit-tiny").freeze()
    local = VideoEncoder.from_pretrained(export).freeze()
    video = torch.randint(0, 256, (1, 4, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(from_hub(video), local(video))
    # by revision too (a commit hash)
    assert VideoEncoder.from_pretrained("robot-lab/salt-vit-tiny", revision=COMMIT) is not None


def test_a_repo_that_is_not_cached_offline_is_a_one_line_error(offline_cache, capsys):
    with pytest.raises(
        FileNotFoundError,
        match=r"could not load .robot-lab/absent.: no such local path.*offline mode",
    ):
        VideoEncoder.from_pretrained("robot-lab/absent")
    assert main(["eval", "probes", "robot-lab/absent", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "hf download robot-lab/absent" in err and len(err.strip().splitlines()) == 1


def test_push_to_hub_uploads_the_export_with_its_card(export, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["allow"] = allow_patterns
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    encoder = VideoEncoder.from_pretrained(export)
    url = encoder.push_to_hub("robot-lab/salt-vit-tiny", token="t0k", private=True)
    assert url == "https://hub/robot-lab/salt-vit-tiny/commit/1"
    assert calls["create"] == ("robot-lab/salt-vit-tiny", True, True) and calls["token"] == "t0k"
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert set(calls["allow"]) == {"README.md", "config.json", "model.safetensors"}
