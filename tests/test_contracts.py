"""Every registered entry of every registry honours its contract in salt/contracts.py.

Parametrized over what is registered (built-ins and any installed third-party plugin), as
timm tests its models: tiny sizes, shapes and invariants only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from salt.config import ClipGeometry, build_config
from salt.contracts import Logger, LossTerm, MaskGroup, Predictor, Student, Teacher
from salt.masking import sample_keys
from salt.registry import loggers, losses, maskers, predictors, students, teachers
from salt.teachers import build_teacher

GEOMETRY = ClipGeometry(num_frames=2, image_size=32, patch_size=16, tubelet_size=2, frame_step=2)
GRID = GEOMETRY.grid  # (1, 2, 2)
N = GEOMETRY.num_tokens
B = 2


def clip(seed: int = 0) -> torch.Tensor:
    """A normalized clip ``[B, C, T, H, W]`` at the test geometry."""
    return torch.randn(B, 3, 2, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", students.names())
def test_students(name):
    student = students.create(name, **GEOMETRY.model_kwargs(), depth=1)
    assert isinstance(student, Student)
    assert tuple(student.grid) == GRID and student.num_tokens == N
    keep = torch.tensor([[0, 2], [1, 3]])
    with torch.no_grad():
        tokens = student.embed(clip())
        out = student.encode(tokens, keep)
    assert tokens.shape == (B, N, student.embed_dim)
    assert out.shape == (B, 2, student.embed_dim) and torch.isfinite(out).all()
    assert student.forward_flops(2) > 0


@pytest.mark.parametrize("name", predictors.names())
def test_predictors(name):
    predictor = predictors.create(
        name,
        embed_dim=16,
        teacher_dim=12,
        grid=GRID,
        width=16,
        depth=1,
        heads=2,
        drop_path=0.0,
        grad_checkpointing=False,
    )
    assert isinstance(predictor, Predictor) and predictor.teacher_dim == 12
    context_idx, target_idx = torch.tensor([[0, 2], [1, 3]]), torch.tensor([[1, 3], [0, 2]])
    with torch.no_grad():
        preds = predictor(torch.randn(B, 2, 16), context_idx, target_idx)
    assert preds.shape == (B, 2, 12) and torch.isfinite(preds).all()
    assert predictor.forward_flops(2, 2) > 0


@pytest.mark.parametrize("name", maskers.names())
def test_maskers(name):
    masker = maskers.create(name, grid=(2, 4, 4))
    groups = masker(sample_keys(0, 0, np.arange(B)))
    assert tuple(masker.grid) == (2, 4, 4) and len(groups) == len(masker.group_names) >= 1
    for group in groups:
        assert isinstance(group, MaskGroup)
        both = torch.cat([group.context, group.target], dim=1).sort(dim=1).values
        assert torch.equal(both, torch.arange(32).expand(B, -1))


@pytest.mark.parametrize("name", losses.names())
def test_losses(name):
    term = losses.create(name)
    assert isinstance(term, LossTerm)
    pred = torch.randn(B, 4, 8, requires_grad=True)
    parts = term(pred, torch.randn(B, 4, 8))
    assert parts and all(v.ndim == 0 and torch.isfinite(v) for v in parts.values())
    sum(parts.values()).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("name", loggers.names())
def test_loggers(name, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = loggers.create(name, run_dir=tmp_path, config=build_config().to_dict())
    assert isinstance(logger, Logger)
    logger.log(1, {"step": 1, "loss": 0.5, "lr": 1e-4, "grad_norm": float("nan")})
    logger.log(2, {"step": 2, "loss": 0.4, "lr": 1e-4, "grad_norm": 1.0})
    logger.close()
    assert any(tmp_path.iterdir())  # it wrote something where the run lives


@pytest.fixture(scope="module")
def teacher_specs(tmp_path_factory) -> dict[str, str]:
    """A working spec for each built-in teacher (files made here, nothing downloaded)."""
    from salt.cache.build import build_cache
    from salt.export import encoder_config, write_export

    root = tmp_path_factory.mktemp("teachers")
    cfg = build_config(
        overrides={
            "data.spec": "synthetic:4",
            "data.num_frames": 2,
            "data.image_size": 32,
            "data.frame_step": 2,
            "data.num_workers": 0,
            "student.name": "vit_tiny",
            "teacher.spec": "pixels",
        }
    )
    student = students.create("vit_tiny", **GEOMETRY.model_kwargs())
    write_export(root / "export", student.state_dict(), encoder_config(cfg.to_dict()))
    build_cache(build_teacher("pixels", GEOMETRY), cfg, root / "cache", workers=0, progress=False)
    specs = {
        "pixels": "pixels",
        "random": "random:vit_tiny",
        "encoder": f"encoder:{root / 'export'}",
        "cached": f"cached:{root / 'cache'}",
    }
    transformers = pytest.importorskip("transformers")
    hf = transformers.VideoMAEConfig(
        image_size=32,
        num_frames=2,
        tubelet_size=2,
        patch_size=16,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    transformers.VideoMAEModel(hf).save_pretrained(root / "videomae")
    specs["videomae"] = f"videomae:{root / 'videomae'}"
    return specs


@pytest.mark.parametrize("name", teachers.names())
def test_teachers(name, teacher_specs):
    if name not in teacher_specs:
        pytest.skip(f"third-party teacher {name!r}: this test knows no spec to build it with")
    teacher = build_teacher(teacher_specs[name], GEOMETRY)
    assert isinstance(teacher, Teacher)
    assert isinstance(teacher.teacher_dim, int) and teacher.teacher_dim > 0
    assert tuple(teacher.grid) == GRID
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    if teacher.cache is not None:  # stored latents: they come with the data, never computed
        assert teacher.forward_flops() == 0.0
        with pytest.raises(RuntimeError, match="come with each batch"):
            teacher(clip())
        return
    with torch.no_grad():
        latents = teacher(clip())
    assert latents.shape == (B, N, teacher.teacher_dim) and torch.isfinite(latents).all()
    assert math.isfinite(teacher.forward_flops())
