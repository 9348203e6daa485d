"""How long loading an encoder takes to fail without a network, and to reject a typo'd path.

Target from the issue: a Hub repo id with no network (``HF_HUB_OFFLINE`` unset) fails in
under 3 s with the offline hint; before the reachability probe, huggingface_hub retried for
about 23 s. No benchmark touches the network: sockets are refused, or made to hang.
"""

from __future__ import annotations

import socket
import threading

import pytest

from salt import VideoEncoder, hub


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline mode unset: what a user without a network has."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def refused(*args, **kwargs):
    raise OSError("network blocked by the benchmark")


def failure(spec: str) -> str:
    """The error loading ``spec`` gives."""
    with pytest.raises(FileNotFoundError) as err:
        VideoEncoder.from_pretrained(spec)
    return str(err.value)


def report(benchmark, summary, seconds_per_call, what: str) -> None:
    times = seconds_per_call(benchmark)
    if times:
        benchmark.extra_info["seconds_to_fail"] = times[0]
        summary(f"{1e3 * times[0]:.2f} ms to fail ({what})")


@pytest.mark.benchmark(group="hub", min_rounds=5, max_time=2.0)
def test_repo_id_with_the_network_refused(
    benchmark, summary, seconds_per_call, no_hub_cache, monkeypatch
):
    """No route, no name server: connections and lookups are refused at once."""
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refused(*a))
    message = benchmark(failure, "robot-lab/absent")
    assert "cannot be reached" in message and "HF_HUB_OFFLINE=1" in message
    report(benchmark, summary, seconds_per_call, "repo id, network refused")


@pytest.mark.benchmark(group="hub")
def test_repo_id_with_the_network_hanging(benchmark, summary, seconds_per_call, no_hub_cache):
    """A network that drops packets, or a name server that never answers: the probe gives
    up after ``hub.PROBE_TIMEOUT_S``."""
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(120)
        raise OSError("released")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", hang)
        try:
            message = benchmark.pedantic(failure, args=("robot-lab/absent",), rounds=3)
        finally:
            release.set()
    assert "cannot be reached" in message
    report(
        benchmark,
        summary,
        seconds_per_call,
        f"repo id, lookups hang; probe {hub.PROBE_TIMEOUT_S} s",
    )


@pytest.mark.benchmark(group="hub", min_rounds=20, max_time=1.0)
def test_path_like_typo(benchmark, summary, seconds_per_call, no_hub_cache, monkeypatch):
    """``runs/typo``: a local path that is not there, never asked of the Hub."""
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    message = benchmark(failure, "runs/typo")
    assert message.startswith("no encoder at 'runs/typo': no such file or folder")
    report(benchmark, summary, seconds_per_call, "runs/typo, a local path")
