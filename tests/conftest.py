"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest
import torch

from salt.config import build_config

TINY = {
    "data.spec": "synthetic:64",
    "data.num_frames": 4,
    "data.image_size": 64,
    "data.num_workers": 0,
    "student.name": "vit_tiny",
    "teacher.spec": "pixels",
    "predictor.width": 32,
    "predictor.depth": 1,
    "predictor.heads": 2,
    "optim.lr": 1e-3,
    "optim.min_lr": 1e-4,
    "optim.warmup_steps": 2,
    "optim.grad_clip": 1.0,
    "train.steps": 8,
    "train.batch_size": 4,
    "train.device": "cpu",
    "train.precision": "fp32",
    "train.log_every": 1,
    "train.checkpoint_every": 4,
    "train.keep_checkpoints": 0,
    "train.eval_every": 0,  # the held-out loss has its own tests (test_validate.py)
    "train.peak_tflops": 1.0,
    "train.progress": False,
}


# The suite runs on pytest-xdist workers (the README's ``-n auto --dist loadfile``): each
# test file on one worker, so the docs guide - one chain of commands, ~10 minutes - runs in
# order on one while the other files spread over the rest. More workers than this would
# only wait for that chain.
MAX_WORKERS = 4


@pytest.hookimpl(optionalhook=True)  # an xdist hook: no error where xdist is missing
def pytest_xdist_auto_num_workers(config):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


def pytest_collection_modifyitems(config, items):
    # The docs guide first: under xdist the longest file starts at once and the others fill
    # the remaining workers around it, instead of it starting last and running alone.
    items.sort(key=lambda item: item.path.name != "test_docs.py")


def pytest_configure(config):
    # Tests never reach the network: no usage reports from the viewer's gradio either.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Workers share the cores: one OpenMP thread each - for the worker and for the commands
    # it starts - or their threads spin-wait on each other and everything runs 10x slower.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a seconds-long CPU run writing under ``tmp_path``."""
    return {**TINY, "run.out": str(tmp_path / "runs"), "run.name": "tiny"}


@pytest.fixture
def tiny_config(tiny_overrides):
    """A tiny, fully specified config (pixels teacher, 4x64 clips, vit_tiny)."""
    return build_config(overrides=tiny_overrides)


@pytest.fixture(autouse=True)
def _quiet_salt_logs():
    # Tests that attach run log files must not leak handlers into each other.
    logger = logging.getLogger("salt")
    before = list(logger.handlers)
    yield
    logger.handlers[:] = before


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Tiny models gain nothing from intra-op threads, and on a busy 2-core box two OpenMP
# threads spin-wait on each other for seconds.
@pytest.fixture
def one_thread():
    """One intra-op thread for a test."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One intra-op thread for a whole module (``pytestmark = usefixtures(...)``)."""
    with torch_threads(1):
        yield
