"""The Hub convention: a model card with every export, loading by repo id from the Hub's
cache offline (never the network), paths told apart from repo ids, a blocked network that
fails fast, and push_to_hub (the upload itself faked)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from salt import VideoEncoder, hub
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


@pytest.fixture
def online_cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp_path, with offline mode unset (as most users have it)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def blocked_network(monkeypatch):
    """No socket can look up a name or connect; every attempt is recorded (and refused)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a: refuse(*a))
    return attempts


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
    assert card.startswith("---\nlibrary_name: salt-vla\nlicense: apache-2.0\n")
    assert "pipeline_tag: feature-extraction" in card.split("---")[1]
    assert config["hidden_size"] == 192 and "| embedding width | 192 (tokens are" in card
    assert 'from_pretrained("REPO_OR_FOLDER")' in card  # a local export: no repo id yet
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

        def create_commit(self, repo_id, operations, commit_message):
            calls["files"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
            calls["message"] = commit_message
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    encoder = VideoEncoder.from_pretrained(export)
    url = encoder.push_to_hub("robot-lab/salt-vit-tiny", token="t0k", private=True)
    assert url == "https://hub/robot-lab/salt-vit-tiny/commit/1"
    assert calls["create"] == ("robot-lab/salt-vit-tiny", True, True) and calls["token"] == "t0k"
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert calls["message"] == "Upload salt-vla encoder"
    # The card as pushed loads from the repo id; the weights go as they are.
    card = calls["files"]["README.md"]
    card = card.read() if hasattr(card, "read") else card
    card = card.decode() if isinstance(card, bytes) else Path(card).read_text()
    assert 'VideoEncoder.from_pretrained("robot-lab/salt-vit-tiny")' in card
    assert "REPO_OR_FOLDER" not in card


# ---------------------------------------------------------------------------------------
# Paths and repo ids; no network


PATH_LIKE = [
    "./enc",
    "../enc",
    "/no/such/enc",
    "~/no-such-salt-encoder",
    "runs/typo",
    "encoders/typo",
    "C:\\encoders\\enc",
    "C:/encoders/enc",
    "org\\name",
    "runs/r/checkpoints",
    "org/..",
    "org/name.safetensors",
    "step_4.pt",
    "enc",
]


@pytest.mark.parametrize("spec", PATH_LIKE)
def test_a_path_like_spec_is_a_local_error_naming_it_and_never_asks_the_hub(
    spec, online_cache, blocked_network, capsys
):
    assert hub.looks_like_path(spec) and not hub.is_repo_id(spec)
    message = rf"^no encoder at {re.escape(repr(spec))}: no such file or folder \(a local path"
    with pytest.raises(FileNotFoundError, match=message):
        VideoEncoder.from_pretrained(spec)
    assert main(["eval", "probes", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"no encoder at {spec!r}" in err and len(err.strip().splitlines()) == 1
    assert blocked_network == []


def test_org_name_is_a_repo_id_unless_its_first_folder_is_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_repo_id("robot-lab/salt-vit-tiny") and hub.is_repo_id("org/model-v1.5")
    (tmp_path / "robot-lab").mkdir()  # a local folder of that name: the path wins
    assert hub.looks_like_path("robot-lab/salt-vit-tiny")
    assert not hub.is_repo_id("robot-lab/salt-vit-tiny")
    assert not hub.is_repo_id("org/name/extra") and not hub.is_repo_id("-org/name")


def test_a_repo_id_with_the_network_blocked_fails_at_once_with_how_to_work_offline(
    online_cache, blocked_network, capsys
):
    from salt.registry import teachers

    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        VideoEncoder.from_pretrained("robot-lab/absent")
    elapsed = time.perf_counter() - start
    message = str(err.value)
    assert "\n" not in message and message.startswith("could not load 'robot-lab/absent'")
    assert "cannot be reached" in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download robot-lab/absent" in message and "local export folder" in message
    assert elapsed < 20  # an upper bound only: benchmarks/test_bench_hub.py has the figure
    assert len(blocked_network) >= 1  # one probe, no retries
    # The same rule and message for a teacher spec and the CLI.
    with pytest.raises(FileNotFoundError, match="cannot be reached.*HF_HUB_OFFLINE=1"):
        teachers.create("encoder:robot-lab/absent", geometry=None)
    assert main(["eval", "probes", "robot-lab/absent", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and len(err.strip().splitlines()) == 1


def test_a_lookup_that_hangs_is_cut_short(online_cache, monkeypatch):
    """A network that swallows packets (or a name server that never answers): the probe
    gives up after its timeout instead of waiting on the lookup."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        raise OSError("released")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    try:
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match="cannot be reached"):
            VideoEncoder.from_pretrained("robot-lab/absent")
        assert time.perf_counter() - start < 20  # an upper bound; the probe waits 2 s
    finally:
        release.set()


def test_a_cached_copy_loads_with_the_network_blocked_and_offline_mode_unset(
    export, online_cache, blocked_network
):
    put_in_cache(online_cache, "robot-lab/salt-vit-tiny", export)
    from_hub = VideoEncoder.from_pretrained("robot-lab/salt-vit-tiny").freeze()
    local = VideoEncoder.from_pretrained(export).freeze()
    video = torch.randint(0, 256, (1, 4, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(from_hub(video), local(video))


@pytest.mark.parametrize(
    "env, endpoint, expected",
    [
        ({}, "https://huggingface.co", ("huggingface.co", 443, "the Hub at")),
        ({}, "http://127.0.0.1:9", ("127.0.0.1", 9, "the Hub at")),
        ({"HTTPS_PROXY": "http://proxy.lab:3128"}, None, ("proxy.lab", 3128, "the proxy")),
        ({"ALL_PROXY": "socks5://gate:1081"}, None, ("gate", 1081, "the proxy")),
        (
            {"HTTPS_PROXY": "http://proxy.lab:3128", "NO_PROXY": "huggingface.co"},
            None,
            ("huggingface.co", 443, "the Hub at"),
        ),
    ],
)
def test_the_probe_goes_where_a_hub_request_would(env, endpoint, expected, monkeypatch):
    from huggingface_hub import constants

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint or "https://huggingface.co")
    assert hub.hub_address() == expected


def test_a_closed_port_is_not_reachable():
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        assert not hub.reachable("127.0.0.1", bound.getsockname()[1])
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert hub.reachable("127.0.0.1", listening.getsockname()[1])
