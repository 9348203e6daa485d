"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import logging

import pytest

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
    "train.peak_tflops": 1.0,
    "train.progress": False,
}


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
