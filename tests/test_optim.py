"""AdamW parameter groups and the LR / weight-decay schedules (salt/optim.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from salt.config import OptimConfig
from salt.models import SaltModel
from salt.optim import (
    apply_schedules,
    build_optimizer,
    is_decayed,
    lr_at,
    param_groups,
    warmup_steps,
    wd_at,
)
from salt.registry import predictors, students

RECIPE = OptimConfig()
TOTAL = 100_000


@pytest.fixture(scope="module")
def model() -> SaltModel:
    student = students.create(
        "vit_tiny", num_frames=2, image_size=16, patch_size=8, depth=1, pos_embed="learned"
    )
    predictor = predictors.create(
        "transformer", embed_dim=192, teacher_dim=16, grid=student.grid, width=32, depth=1, heads=4
    )
    return SaltModel(student, predictor)


def names_by_group(model: nn.Module) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {by_id[id(p)] for p in g["params"]} for g in param_groups(model)}


def test_weight_matrices_decay_and_everything_else_does_not(model):
    groups = names_by_group(model)
    matrices = {
        f"{module_name}.weight"
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv3d))
    }
    assert groups["decay"] == matrices
    no_decay = groups["no_decay"]
    assert {"student.pos_embed", "predictor.mask_token"} <= no_decay
    assert "student.norm.weight" in no_decay and "predictor.norm.weight" in no_decay
    assert "student.blocks.0.norm1.weight" in no_decay
    assert "student.patch_embed.proj.bias" in no_decay
    assert all(n in no_decay for n, _ in model.named_parameters() if n.endswith(".bias"))
    # Every trainable parameter is in exactly one group.
    assert not groups["decay"] & no_decay
    assert groups["decay"] | no_decay == {n for n, _ in model.named_parameters()}


def test_frozen_parameters_are_left_out():
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    groups = names_by_group(net)
    assert groups == {"decay": {"2.weight"}, "no_decay": {"1.weight", "1.bias", "2.bias"}}


@pytest.mark.parametrize(
    "name,shape,decayed",
    [
        ("blocks.0.attn.qkv.weight", (6, 2), True),
        ("blocks.0.attn.qkv.bias", (6,), False),
        ("norm.weight", (4,), False),
        ("pos_embed", (1, 8, 4), False),
        ("mask_token", (1, 1, 4), False),
        ("cls_token", (1, 1, 4), False),
        ("head.pos_embed_proj.weight", (4, 4), True),
    ],
)
def test_is_decayed(name, shape, decayed):
    assert is_decayed(name, torch.zeros(shape)) is decayed


def test_build_optimizer_uses_the_config(model):
    cfg = OptimConfig(lr=3e-4, betas=(0.8, 0.9), eps=1e-6)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["name"] for g in opt.param_groups] == ["decay", "no_decay"]
    for g in opt.param_groups:
        assert g["lr"] == 3e-4 and g["betas"] == (0.8, 0.9) and g["eps"] == 1e-6


def test_apply_schedules_sets_weight_decay_on_the_decay_group_only(model):
    opt = build_optimizer(model, RECIPE)
    opt.param_groups[1]["weight_decay"] = 0.7  # even a stray value is reset
    apply_schedules(opt, lr=1e-3, wd=0.3)
    decay, no_decay = opt.param_groups
    assert decay["lr"] == no_decay["lr"] == 1e-3
    assert decay["weight_decay"] == 0.3 and no_decay["weight_decay"] == 0.0


def test_weight_decay_shrinks_only_the_decay_group():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    nn.init.ones_(net[0].weight)
    nn.init.constant_(net[1].weight, 2.0)
    opt = build_optimizer(net, RECIPE)
    apply_schedules(opt, lr=0.1, wd=0.5)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # AdamW with zero gradients only applies decoupled decay: w *= 1 - lr * wd.
    torch.testing.assert_close(net[0].weight, torch.full((4, 4), 0.95))
    torch.testing.assert_close(net[1].weight, torch.full((4,), 2.0))


# --- schedules -------------------------------------------------------------------------------


def test_recipe_lr_warms_up_linearly():
    assert warmup_steps(RECIPE, TOTAL) == 2000
    assert lr_at(0, RECIPE, TOTAL) == pytest.approx(2e-4 / 2000)
    assert lr_at(999, RECIPE, TOTAL) == pytest.approx(2e-4 / 2)
    assert lr_at(1999, RECIPE, TOTAL) == pytest.approx(2e-4)
    ramp = [lr_at(s, RECIPE, TOTAL) for s in range(0, 2000, 100)]
    assert all(b > a for a, b in zip(ramp, ramp[1:], strict=False))


def test_recipe_lr_follows_a_cosine_down_to_min_lr():
    lr, min_lr = RECIPE.lr, RECIPE.min_lr
    assert lr_at(2000, RECIPE, TOTAL) == pytest.approx(lr)
    assert lr_at(2000 + 49_000, RECIPE, TOTAL) == pytest.approx((lr + min_lr) / 2)
    quarter = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi / 4))
    assert lr_at(2000 + 24_500, RECIPE, TOTAL) == pytest.approx(quarter)
    assert lr_at(TOTAL, RECIPE, TOTAL) == pytest.approx(min_lr)
    assert lr_at(TOTAL + 500, RECIPE, TOTAL) == pytest.approx(min_lr)
    decay = [lr_at(s, RECIPE, TOTAL) for s in range(2000, TOTAL, 1000)]
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))
    assert min(decay) > min_lr


def test_recipe_weight_decay_rises_from_0_04_to_0_4():
    assert wd_at(0, RECIPE, TOTAL) == pytest.approx(0.04)
    assert wd_at(TOTAL // 2, RECIPE, TOTAL) == pytest.approx(0.22)
    assert wd_at(TOTAL, RECIPE, TOTAL) == pytest.approx(0.4)
    assert wd_at(2 * TOTAL, RECIPE, TOTAL) == pytest.approx(0.4)
    values = [wd_at(s, RECIPE, TOTAL) for s in range(0, TOTAL + 1, 5000)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    "total,expected", [(100_000, 2000), (20_000, 2000), (10_000, 1000), (100, 10), (5, 0)]
)
def test_warmup_is_capped_by_max_warmup_fraction(total, expected):
    assert warmup_steps(RECIPE, total) == expected


def test_short_runs_warm_up_over_their_capped_warmup():
    # 100 steps: warmup is 10 steps, not 2000, so the run reaches its peak LR.
    assert lr_at(0, RECIPE, 100) == pytest.approx(2e-4 / 10)
    assert lr_at(9, RECIPE, 100) == pytest.approx(2e-4)
    assert lr_at(100, RECIPE, 100) == pytest.approx(1e-5)
    # No warmup at all: the first step already runs at the peak.
    assert lr_at(0, RECIPE, 5) == pytest.approx(2e-4)
    no_warmup = OptimConfig(warmup_steps=0)
    assert lr_at(0, no_warmup, TOTAL) == pytest.approx(2e-4)


def test_the_cpu_keeps_the_loop_and_the_fused_kernel_steps_as_it_does():
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = build_optimizer(nets[0], RECIPE, fused=True)
    loop = build_optimizer(nets[1], RECIPE)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    before = nets[0][0].weight.detach().clone()
    for _ in range(5):
        x = torch.randn(4, 8)
        for net, opt in ((nets[0], fused), (nets[1], loop)):
            apply_schedules(opt, lr=1e-2, wd=0.1)
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0][0].weight, before)  # it did step
