"""The Hub convention: a model card with every export, loading by repo id from the Hub's
cache offline (never the network), paths told apart from repo ids, a blocked network that
fails fast, and push_to_hub (the upload itself faked)."""

from __future__ import annotations

import contextlib
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
    assert f'from_pretrained("{export}")' in card  # a local export: loaded from its folder
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

        def create_commit(self, repo_id, operations, commit_message, revision, create_pr):
            calls["files"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
            calls["message"] = commit_message
            calls["where"] = (revision, create_pr)
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    encoder = VideoEncoder.from_pretrained(export)
    url = encoder.push_to_hub("robot-lab/salt-vit-tiny", token="t0k", private=True)
    assert url == "https://hub/robot-lab/salt-vit-tiny/commit/1"
    assert calls["create"] == ("robot-lab/salt-vit-tiny", True, True) and calls["token"] == "t0k"
    assert sorted(calls["files"]) == ["README.md", "config.json", "model.safetensors"]
    assert calls["message"] == "Upload salt-vla encoder" and calls["where"] == (None, False)
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


@contextlib.contextmanager
def fake_proxy(answer: bytes | None):
    """An HTTP proxy on localhost that accepts every connection and answers each request
    with ``answer`` (None: reads it and never answers); yields its URL and the requests."""
    seen: list[bytes] = []
    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)

    def serve() -> None:
        held = []
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                seen.append(conn.recv(1024))
                if answer is not None:
                    conn.sendall(answer)
            held.append(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture
def proxied(monkeypatch):
    """Route Hub requests through whatever proxy the test sets (no NO_PROXY exemption)."""
    from huggingface_hub import constants

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    return lambda url: monkeypatch.setenv("HTTPS_PROXY", url)


@pytest.mark.parametrize(
    "answer, expected",
    [
        (b"HTTP/1.1 200 Connection established\r\n\r\n", True),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", False),
        (b"garbage", False),
        (None, False),  # accepts the connection, never answers
    ],
)
def test_behind_a_proxy_the_probe_asks_it_for_the_hub(proxied, answer, expected):
    with fake_proxy(answer) as (url, seen):
        proxied(url.replace("http://", "http://user:secret@"))
        assert hub.hub_reachable(timeout=1.0) is expected
    request = seen[0].decode()
    assert request.startswith("CONNECT huggingface.co:443 HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=" in request  # user:secret


def test_a_proxy_that_cannot_reach_the_hub_fails_fast_with_how_to_work_offline(
    online_cache, proxied
):
    with fake_proxy(b"HTTP/1.1 502 Bad Gateway\r\n\r\n") as (url, seen):
        proxied(url)
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError) as err:
            VideoEncoder.from_pretrained("robot-lab/absent")
        elapsed = time.perf_counter() - start
    message = str(err.value)
    assert "\n" not in message and "cannot be reached through the proxy 127.0.0.1:" in message
    assert "HF_HUB_OFFLINE=1" in message and "local export folder" in message
    assert elapsed < 20  # an upper bound only; the probe waits at most 2 s
    assert len(seen) == 1  # one probe, then no Hub request at all


# ---------------------------------------------------------------------------------------
# Hugging Face-grade exports: ModelCard metadata, recorded results, the Hub's options


def card_of(text: str):
    from huggingface_hub import ModelCard

    return ModelCard(text)


def test_the_card_metadata_names_hub_teachers_and_datasets_and_the_license(export):
    config = json.loads((export / "config.json").read_text())
    local = card_of(hub.model_card(config)).data
    assert local.license == "apache-2.0" and local.pipeline_tag == "feature-extraction"
    assert local.library_name == "salt-vla" and local.base_model is None and not local.datasets
    on_hub = {
        **config,
        "teacher": "videomae:MCG-NJU/videomae-base",
        "data": "lerobot:lerobot/pusht:top",
        "license": "mit",
    }
    data = card_of(hub.model_card(on_hub, repo_id="robot-lab/enc")).data
    assert data.base_model == "MCG-NJU/videomae-base" and data.datasets == ["lerobot/pusht"]
    assert data.license == "mit" and data.model_name == "robot-lab/enc"
    # Local teachers and data (a folder, the built-in data) are never named as Hub ids.
    assert hub.hub_id_in("encoder:encoders/teacher") is None
    assert hub.hub_id_in("synthetic:64") is None and hub.hub_id_in("pixels") is None


def test_salt_export_takes_a_license(export, tmp_path):
    run = next((export.parent / "runs").iterdir())
    assert main(["export", str(run), "--out", str(tmp_path / "e"), "--license", "cc-by-4.0"]) == 0
    assert card_of((tmp_path / "e" / "README.md").read_text()).data.license == "cc-by-4.0"
    assert json.loads((tmp_path / "e" / "config.json").read_text())["license"] == "cc-by-4.0"


def test_classify_records_its_scores_into_the_export_as_model_index(export, tmp_path, capsys):
    target = tmp_path / "enc"
    shutil.copytree(export, target)
    weights = (target / "model.safetensors").read_bytes()
    argv = ["eval", "classify", str(target), "--data", "motion:28", "--epochs", "1"]
    argv += ["--seeds", "1", "--workers", "0", "--no-progress", "--record"]
    assert main(argv) == 0
    assert f"recorded 2 result(s) into {target}" in capsys.readouterr().out
    recorded = json.loads((target / "config.json").read_text())["evaluations"]
    assert {(e["dataset"], e["name"]) for e in recorded} == {
        ("motion:28", "top-1, attentive probe (frozen)"),
        ("motion:28", "top-1, linear probe (frozen)"),
    }
    results = card_of((target / "README.md").read_text()).data.eval_results
    assert sorted(r.metric_name for r in results) == sorted(e["name"] for e in recorded)
    assert {r.dataset_type for r in results} == {"salt-vla/motion"}
    assert {r.metric_value for r in results} == {e["value"] for e in recorded}
    # Again: the same benchmark's entries are replaced, not repeated; the weights stay.
    assert main(argv) == 0
    assert len(json.loads((target / "config.json").read_text())["evaluations"]) == 2
    assert (target / "model.safetensors").read_bytes() == weights
    assert VideoEncoder.from_pretrained(target) is not None


def test_record_refuses_what_is_neither_an_export_nor_a_run_before_any_work(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    argv = ["eval", "distill", str(tmp_path / "notes"), "--record", str(tmp_path / "notes")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "neither an export folder" in err and len(err.strip().splitlines()) == 1


def test_classify_records_into_a_run_and_salt_runs_shows_it(export, tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    shutil.copytree(next((export.parent / "runs").iterdir()), run)
    argv = ["eval", "classify", str(run), "--data", "motion:28", "--epochs", "1", "--seeds", "1"]
    assert main([*argv, "--workers", "0", "--no-progress", "--record"]) == 0
    assert f"recorded 2 result(s) into {run / 'evaluations.json'}" in capsys.readouterr().out
    entries = json.loads((run / "evaluations.json").read_text())
    assert {e["step"] for e in entries} == {2} and len(entries) == 2
    attentive = next(e for e in entries if "attentive" in e["name"])
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["probe_top1"] == attentive["value"] and row["probe_step"] == 2
    assert row["probe"] == "attentive probe, motion:28"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert "probe top-1" in header and f"{attentive['value']:.4f} @2" in line


def test_distill_records_only_into_an_export_of_the_same_step(export, tmp_path, capsys):
    run = next((export.parent / "runs").iterdir())
    target = tmp_path / "enc"
    shutil.copytree(export, target)
    assert main(["eval", "distill", str(run), "--batches", "1", "--record", str(target)]) == 0
    (entry,) = json.loads((target / "config.json").read_text())["evaluations"]
    assert entry["metric"] == "loss" and entry["step"] == 2
    assert card_of((target / "README.md").read_text()).data.eval_results[0].metric_type == "loss"
    config = json.loads((target / "config.json").read_text())
    config["summary"]["checkpoint_step"] = 1  # an export of another checkpoint
    (target / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["eval", "distill", str(run), "--batches", "1", "--record", str(target)]) == 2
    assert "holds step 1's encoder, but the result is step 2's" in capsys.readouterr().err


def test_from_pretrained_takes_cache_dir_local_files_only_and_token(export, tmp_path, monkeypatch):
    cache = tmp_path / "elsewhere"
    put_in_cache(cache, "robot-lab/salt-vit-tiny", export)
    encoder = VideoEncoder.from_pretrained(
        "robot-lab/salt-vit-tiny", cache_dir=cache, local_files_only=True
    )
    assert encoder.config["architecture"] == "vit_tiny"
    with pytest.raises(FileNotFoundError, match="local_files_only: the Hub cache .* no copy"):
        VideoEncoder.from_pretrained("robot-lab/absent", cache_dir=cache, local_files_only=True)
    seen = {}

    def fake_download(repo_id, filename, revision=None, cache_dir=None, token=None, **kw):
        seen.update(token=token, cache_dir=cache_dir, revision=revision)
        return str(cache / f"models--robot-lab--salt-vit-tiny/snapshots/{COMMIT}/{filename}")

    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network probe
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    VideoEncoder.from_pretrained("robot-lab/salt-vit-tiny", cache_dir=cache, token="hf_x")
    assert seen == {"token": "hf_x", "cache_dir": cache, "revision": None}


def test_push_to_a_branch_or_as_a_pull_request(export, monkeypatch, capsys):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("repo", private))

        def create_branch(self, repo_id, branch, exist_ok=False):
            calls.append(("branch", branch))

        def create_commit(self, repo_id, operations, commit_message, revision, create_pr):
            calls.append(("commit", commit_message, revision, create_pr))
            return type("Info", (), {"commit_url": "c", "pr_url": "https://hub/pr/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    run = next((export.parent / "runs").iterdir())
    out = export.parent / "pushed"
    argv = ["export", str(run), "--out", str(out), "--push-to-hub", "robot-lab/enc"]
    argv += ["--revision", "v2", "--commit-message", "step 2", "--private", "--force"]
    assert main(argv) == 0
    assert calls == [("repo", True), ("branch", "v2"), ("commit", "step 2", "v2", False)]
    assert "revision='v2'" in capsys.readouterr().out
    calls.clear()
    url = VideoEncoder.from_pretrained(export).push_to_hub("robot-lab/enc", create_pr=True)
    assert url == "https://hub/pr/1" and calls[-1] == (
        "commit",
        "Upload salt-vla encoder",
        None,
        True,
    )
    assert ("branch", None) not in calls
    # Hub options without --push-to-hub would be silently ignored: refused instead.
    assert main(["export", str(run), "--out", str(out), "--force", "--create-pr"]) == 2
    assert "--create-pr only applies with --push-to-hub" in capsys.readouterr().err
