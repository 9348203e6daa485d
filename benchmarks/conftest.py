"""Shared fixtures for the benchmarks: thread pinning, the CPU matmul peak, a summary table.

Run with ``python -m pytest benchmarks/ --benchmark-only`` (see benchmarks/README.md).
"""

from __future__ import annotations

import pytest
import torch

from salt.perf import measure_peak_tflops

# Derived numbers (clips/s, GFLOP/s, MFU, ...) each benchmark reports, printed at the end.
_SUMMARY = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUMMARY] = []


@pytest.fixture
def summary(request: pytest.FixtureRequest):
    """Append ``(benchmark name, one-line result)`` to the end-of-run summary."""
    lines = request.config.stash[_SUMMARY]

    def add(text: str) -> None:
        lines.append((request.node.name, text))

    return add


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own table
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if not lines:
        return
    terminalreporter.section("salt benchmark summary (indicative; timings are never asserted)")
    width = max(len(name) for name, _ in lines)
    for name, text in lines:
        terminalreporter.write_line(f"{name:<{width}}  {text}")


@pytest.fixture
def pin_threads():
    """Call with N to set torch's intra-op thread count for this benchmark; restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cpu_peak_gflops() -> float:
    """Achievable fp32 matmul GFLOP/s on 2 threads (``salt.perf.measure_peak_tflops``).

    Measured once per session, best of three calls since anything else running only ever
    lowers it; the reference machine gave ~204 GFLOP/s.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = torch.device("cpu")
        return 1e3 * max(measure_peak_tflops(cpu, torch.float32) for _ in range(3))
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def seconds_per_call():
    """``f(benchmark)`` -> (mean, fastest) seconds per call, or None if benchmarking is off."""

    def read(benchmark) -> tuple[float, float] | None:
        if not benchmark.stats:
            return None
        stats = benchmark.stats.stats
        return stats.mean, stats.min

    return read
