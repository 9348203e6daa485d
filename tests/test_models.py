"""Students, the predictor (plugins/salt_vit) and the trainable pair (salt/models.py)."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from salt.config import build_config
from salt.losses import Objective, masked_loss
from salt.masking import MaskGroup, gather_tokens, sample_keys
from salt.models import SaltModel, predictor_of, student_of
from salt.registry import UnknownNameError, maskers, predictors, students
from salt_vit import TransformerPredictor, VideoViT
from salt_vit.block import Block
from salt_vit.pos_embed import sincos_1d, sincos_3d

FRAMES, SIZE, PATCH, TUBELET = 4, 32, 8, 2
GRID = (FRAMES // TUBELET, SIZE // PATCH, SIZE // PATCH)  # (2, 4, 4)
TOKENS = GRID[0] * GRID[1] * GRID[2]
TEACHER_DIM = 24

# Published parameter counts of the ViT trunks (no head, no CLS token).
REFERENCE_PARAMS = {
    "vit_tiny": 5.6e6,
    "vit_small": 21.8e6,
    "vit_base": 86.0e6,
    "vit_large": 303.5e6,
    "vit_huge": 631.0e6,
    "vit_giant": 1011.0e6,
}


pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_student(**overrides) -> VideoViT:
    kwargs = dict(num_frames=FRAMES, image_size=SIZE, patch_size=PATCH, depth=2)
    return students.create("vit_tiny", **{**kwargs, **overrides}).eval()


def tiny_predictor(**overrides) -> TransformerPredictor:
    kwargs = dict(embed_dim=192, teacher_dim=TEACHER_DIM, grid=GRID, width=32, depth=1, heads=4)
    return predictors.create("transformer", **{**kwargs, **overrides}).eval()


@pytest.fixture(scope="module")
def student() -> VideoViT:
    torch.manual_seed(0)
    return tiny_student()


@pytest.fixture(scope="module")
def predictor() -> TransformerPredictor:
    torch.manual_seed(1)
    return tiny_predictor()


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def tubelet_slices(token: int) -> tuple[slice, slice, slice]:
    """Pixel region (frames, rows, cols) of one token in (t, h, w) raster order."""
    t, h, w = np.unravel_index(token, GRID)
    return (
        slice(t * TUBELET, (t + 1) * TUBELET),
        slice(h * PATCH, (h + 1) * PATCH),
        slice(w * PATCH, (w + 1) * PATCH),
    )


# --- the registry ----------------------------------------------------------------------------


def test_every_size_is_registered_with_its_alias():
    names = students.names()
    assert names == sorted(REFERENCE_PARAMS)
    for name in names:
        short = "vit_" + name.split("_")[1][0]
        assert short in students
        assert students.get(short).name == name
        assert students.get(short).aliases == (short,)
    assert students.get("vit_l").name == "vit_large"


def test_a_variant_is_declared_once_and_registered_from_there(monkeypatch):
    from salt_vit import vit

    # One more row in the table is one more student, alias and description included.
    nano = vit.Variant("vit_nano", embed_dim=48, depth=2, num_heads=2, aliases=("vit_n",))
    monkeypatch.setitem(vit.VARIANTS, "vit_nano", nano)
    assert students.get("vit_n").name == "vit_nano"
    assert students.get("vit_nano").description == "video ViT, width 48, depth 2, 2 heads"
    assert students.create("vit_n", num_frames=2, image_size=16).embed_dim == 48
    monkeypatch.undo()
    assert "vit_nano" not in students and "vit_n" not in students


@pytest.mark.parametrize("name", students.names())
def test_each_size_matches_its_description_and_parameter_count(name):
    # Built one block deep on a tiny clip (positions are a buffer, so the clip size does not
    # change the count); the full trunk is the rest plus `depth` identical blocks, which
    # keeps vit_giant cheap enough for a unit test.
    entry = students.get(name)
    width, depth, heads = map(
        int,
        re.fullmatch(
            r"video ViT, width (\d+), depth (\d+), (\d+) heads", entry.description
        ).groups(),
    )
    model = students.create(name, num_frames=2, image_size=16, depth=1)
    assert model.embed_dim == model.num_features == width
    assert model.num_heads == heads and model.blocks[0].attn.num_heads == heads
    block = sum(p.numel() for p in model.blocks[0].parameters())
    rest = sum(p.numel() for p in model.parameters()) - block
    total = rest + depth * block
    assert total == pytest.approx(REFERENCE_PARAMS[name], rel=0.01)


def test_alias_builds_the_same_architecture():
    torch.manual_seed(0)
    a = students.create("vit_t", num_frames=FRAMES, image_size=SIZE, depth=1)
    torch.manual_seed(0)
    b = students.create("vit_tiny", num_frames=FRAMES, image_size=SIZE, depth=1)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_student_spec_errors():
    with pytest.raises(ValueError, match="takes no argument"):
        students.create("vit_tiny:big")
    with pytest.raises(UnknownNameError, match="Did you mean 'vit_large'"):
        students.create("vit_larg")


# --- VideoViT --------------------------------------------------------------------------------


def test_forward_without_keep_returns_every_token(student, video):
    out = student(video)
    assert student.grid == GRID and student.num_tokens == TOKENS
    assert out.shape == (2, TOKENS, 192)
    # The final LayerNorm (weight 1, bias 0 at init) leaves each token zero-mean, unit-var.
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, TOKENS), atol=1e-5, rtol=0)


def test_forward_with_keep_runs_the_blocks_on_the_kept_tokens_only(student, video):
    keep = torch.tensor([[0, 5, 6, 31], [1, 2, 17, 30]])
    with torch.no_grad():
        out = student(video, keep)
        tokens = gather_tokens(student.embed(video), keep)
        for block in student.blocks:
            tokens = block(tokens)
        expected = student.norm(tokens)
        full = gather_tokens(student(video), keep)
    assert out.shape == (2, 4, 192)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(student.encode(student.embed(video), keep), out)
    # Attention over all tokens gives something else: the dropped tokens really are dropped.
    assert (out - full).abs().max() > 1e-2


def test_embed_puts_tokens_in_t_h_w_raster_order(student, video):
    token = int(np.ravel_multi_index((1, 2, 3), GRID))
    changed = video.clone()
    changed[(slice(None), slice(None), *tubelet_slices(token))] += 1.0
    with torch.no_grad():
        diff = (student.embed(changed) - student.embed(video)).abs().amax(dim=(0, 2))
    assert diff.argmax() == token
    assert (diff[torch.arange(TOKENS) != token] < 1e-6).all()


def test_tokens_outside_keep_do_not_influence_the_output(student, video):
    keep = torch.tensor([[0, 3, 9, 20, 27]]).expand(2, -1)
    hidden, kept = 14, 9
    with torch.no_grad():
        base = student(video, keep)
        for token, should_change in ((hidden, False), (kept, True)):
            changed = video.clone()
            changed[(slice(None), slice(None), *tubelet_slices(token))] = 5.0
            diff = (student(changed, keep) - base).abs().max()
            assert (diff > 1e-2) if should_change else (diff < 1e-6), (token, diff)


def test_keep_may_differ_per_sample(student, video):
    keep = torch.tensor([[0, 1, 2], [29, 30, 31]])
    with torch.no_grad():
        both = student(video, keep)
        first = student(video[:1], keep[:1])
        second = student(video[1:], keep[1:])
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)


def test_sincos_pos_embed_is_a_fixed_buffer(student):
    assert student.pos_embed.shape == (1, TOKENS, 192)
    assert not isinstance(student.pos_embed, nn.Parameter)
    assert "pos_embed" not in dict(student.named_parameters())
    assert "pos_embed" not in student.state_dict()
    torch.testing.assert_close(student.pos_embed[0], sincos_3d(192, GRID))


def test_learned_pos_embed_is_a_saved_parameter():
    model = tiny_student(pos_embed="learned", depth=1)
    assert isinstance(model.pos_embed, nn.Parameter) and model.pos_embed.requires_grad
    assert model.pos_embed.shape == (1, TOKENS, 192)
    assert "pos_embed" in model.state_dict()
    assert 0 < model.pos_embed.std() < 0.05  # trunc-normal, std 0.02


def test_sincos_embeddings_tell_every_position_apart():
    emb = sincos_3d(48, (3, 4, 5))
    assert emb.shape == (60, 48) and emb.dtype == torch.float32
    assert emb.abs().max() <= 1.0
    assert torch.cdist(emb, emb).add(torch.eye(60) * 1e3).min() > 0.1
    one = sincos_1d(8, torch.arange(3))
    torch.testing.assert_close(one[0], torch.tensor([0.0] * 4 + [1.0] * 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="even width, got 7"):
        sincos_1d(7, torch.arange(3))
    with pytest.raises(ValueError, match="even width >= 6, got 4"):
        sincos_3d(4, (1, 1, 1))


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 3, 6, SIZE, SIZE), r"clip of shape \(1, 3, 6, 32, 32\) gives 48 tokens, expected 32"),
        ((1, 3, FRAMES, 48, 48), "expected 32 for 4 frames at 32px"),
    ],
)
def test_wrong_clip_size_names_the_expected_geometry(student, shape, match):
    with pytest.raises(ValueError, match=match):
        student(torch.zeros(shape))


def test_bad_geometry_and_options_are_rejected():
    with pytest.raises(ValueError, match="5x32 clip does not tile into 2x8x8 tubelets"):
        tiny_student(num_frames=5)
    with pytest.raises(ValueError, match="does not tile"):
        tiny_student(image_size=30)
    with pytest.raises(ValueError, match="'sincos' or 'learned', got 'rope'"):
        tiny_student(pos_embed="rope")


# --- the block: timm's ViT Block, written out ----------------------------------------------


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_the_block_equals_timms_vit_block(drop_path):
    from timm.models import vision_transformer as timm_vit  # a dev dependency

    norm = functools.partial(nn.LayerNorm, eps=1e-6)
    torch.manual_seed(0)
    ours = Block(48, 3, mlp_ratio=2.5, qkv_bias=True, drop_path=drop_path, norm_layer=norm)
    theirs = timm_vit.Block(
        48, 3, mlp_ratio=2.5, qkv_bias=True, drop_path=drop_path, norm_layer=norm
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 10, 48)
    for train in (False, True):  # in training, drop-path draws the same random numbers
        ours.train(train), theirs.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(1)
        a = ours(xa)
        torch.manual_seed(1)
        b = theirs(xb)
        assert torch.equal(a, b)
        a.square().sum().backward(), b.square().sum().backward()
        assert torch.equal(xa.grad, xb.grad)
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad), name
            p.grad = q.grad = None
    if drop_path:  # and it does drop: some samples' branches are zero in training
        ours.train()
        torch.manual_seed(2)
        assert not torch.equal(ours(x), ours.eval()(x))


def test_building_a_student_and_predictor_imports_neither_timm_nor_torchvision():
    # timm's import (torchvision, torch._dynamo, every model file) is seconds per process.
    code = (
        "import sys; from salt.registry import predictors, students; "
        "s = students.create('vit_tiny', num_frames=4, image_size=32, patch_size=8, depth=1); "
        "predictors.create('transformer', embed_dim=192, teacher_dim=8, grid=(2, 4, 4), "
        "width=32, depth=1, heads=4); "
        "loaded = sorted(m for m in ('timm', 'torchvision') if m in sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_grad_checkpointing_changes_memory_not_results(video):
    torch.manual_seed(0)
    plain = tiny_student().train()
    ckpt = tiny_student().train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing()
    assert ckpt.grad_checkpointing
    keep = torch.tensor([[0, 4, 8, 12, 16, 31]]).expand(2, -1)
    for model in (plain, ckpt):
        model(video, keep).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@contextlib.contextmanager
def unfused():
    # The flop counter sees the math kernel's explicit q@k and attn@v matmuls, not the fused
    # CPU kernel.
    with sdpa_kernel(SDPBackend.MATH):
        yield


def test_student_forward_flops_match_a_flop_counter(video):
    model = tiny_student()
    keep = torch.arange(0, TOKENS, 3).expand(1, -1)  # 11 tokens
    with torch.no_grad(), unfused():
        measured = count_flops(lambda: model(video[:1], keep))
    assert model.forward_flops(keep.shape[1]) == pytest.approx(measured, rel=1e-6)


def test_student_forward_flops_grow_with_kept_tokens(student):
    flops = [student.forward_flops(k) for k in (1, 8, 16, 32)]
    assert flops[0] > 0
    assert all(a < b for a, b in zip(flops, flops[1:], strict=False))
    # Attention makes the per-token cost grow with the sequence length.
    assert student.flops_per_token(32) > student.flops_per_token(8)


# --- the predictor ---------------------------------------------------------------------------


def context_for(student, video, context_idx):
    with torch.no_grad():
        return student(video, context_idx)


def test_predictor_output_has_teacher_width_at_each_target(student, predictor, video):
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]])
    tgt_idx = torch.tensor([[5, 6, 7], [20, 21, 31]])
    with torch.no_grad():
        out = predictor(context_for(student, video, ctx_idx), ctx_idx, tgt_idx)
    assert out.shape == (2, 3, TEACHER_DIM)


def test_predictions_depend_on_target_positions(student, predictor, video):
    ctx_idx = torch.tensor([[0, 1, 2, 3]]).expand(2, -1)
    ctx = context_for(student, video, ctx_idx)
    with torch.no_grad():
        a = predictor(ctx, ctx_idx, torch.tensor([[5, 6]]).expand(2, -1))
        b = predictor(ctx, ctx_idx, torch.tensor([[5, 30]]).expand(2, -1))
        swapped = predictor(ctx, ctx_idx, torch.tensor([[6, 5]]).expand(2, -1))
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-3
    # Targets attend to each other symmetrically: reordering them reorders the output.
    torch.testing.assert_close(swapped, a.flip(1), atol=1e-5, rtol=1e-5)


def test_predictions_depend_on_context_positions(student, predictor, video):
    ctx = context_for(student, video, torch.tensor([[0, 1, 2, 3]]).expand(2, -1))
    tgt = torch.tensor([[8, 9]]).expand(2, -1)
    with torch.no_grad():
        a = predictor(ctx, torch.tensor([[0, 1, 2, 3]]).expand(2, -1), tgt)
        b = predictor(ctx, torch.tensor([[0, 1, 2, 31]]).expand(2, -1), tgt)
    assert (a - b).abs().max() > 1e-4


def test_predictor_state_and_options():
    pred = tiny_predictor()
    state = pred.state_dict()
    assert "mask_token" in state and "pos_embed" not in state
    assert pred.pos_embed.shape == (1, TOKENS, 32)
    with pytest.raises(ValueError, match="width 30 is not divisible by its 4 heads"):
        tiny_predictor(width=30)
    with pytest.raises(ValueError, match="takes no argument"):
        predictors.create("transformer:big", embed_dim=8, teacher_dim=8, grid=GRID)


def test_predictor_forward_flops_match_a_flop_counter(student, video):
    pred = tiny_predictor(depth=2)
    ctx_idx = torch.arange(0, 10).expand(1, -1)
    tgt_idx = torch.arange(10, 17).expand(1, -1)
    ctx = context_for(student, video[:1], ctx_idx)
    with torch.no_grad(), unfused():
        measured = count_flops(lambda: pred(ctx, ctx_idx, tgt_idx))
    assert pred.forward_flops(10, 7) == pytest.approx(measured, rel=1e-6)
    assert 0 < pred.forward_flops(4, 4) < pred.forward_flops(4, 8) < pred.forward_flops(8, 8)


# --- SaltModel and the masked loss -----------------------------------------------------------


def tiny_salt_config():
    return build_config(
        "demo",
        overrides={
            "data.num_frames": FRAMES,
            "data.image_size": SIZE,
            "student.patch_size": PATCH,
            "predictor.width": 32,
            "predictor.depth": 1,
            "predictor.heads": 4,
            "mask.name": "tube",
        },
    )


def test_salt_model_predicts_every_mask_group(video):
    cfg = tiny_salt_config()
    student = student_of(cfg)
    assert student.grid == cfg.grid == GRID and student.embed_dim == 192
    model = SaltModel(student, predictor_of(cfg, student.embed_dim, TEACHER_DIM)).eval()
    masks = maskers.create(
        "multiblock",
        grid=GRID,
        groups=[
            {"name": "a", "num_blocks": 1, "spatial_scale": 0.2},
            {"name": "b", "num_blocks": 2, "spatial_scale": 0.4},
        ],
    )(sample_keys(0, 0, np.arange(2)))
    with torch.no_grad():
        preds = model(video, masks)
    assert [p.shape for p in preds] == [(2, g.target.shape[1], TEACHER_DIM) for g in masks]
    expected = sum(
        model.student.forward_flops(g.context.shape[1])
        + model.predictor.forward_flops(g.context.shape[1], g.target.shape[1])
        for g in masks
    )
    assert model.train_flops(2, masks) == pytest.approx(3 * 2 * expected)


def test_masked_loss_averages_groups_and_terms():
    targets = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    masks = [
        MaskGroup(torch.tensor([[0], [0]]), torch.tensor([[1, 2], [3, 4]])),
        MaskGroup(torch.tensor([[0], [1]]), torch.tensor([[5], [5]])),
    ]
    preds = [torch.zeros(2, 2, 3), torch.zeros(2, 1, 3)]
    loss, terms = masked_loss(preds, targets, masks, Objective("mse"))
    first = gather_tokens(targets, masks[0].target).square().mean()
    second = gather_tokens(targets, masks[1].target).square().mean()
    torch.testing.assert_close(loss, (first + second) / 2)
    torch.testing.assert_close(terms["mse"], (first + second) / 2)
    assert not terms["mse"].requires_grad
