"""The videomae:PATH teacher: HF and original layouts match transformers; strict loads; training."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from salt.config import build_config
from salt.models import teacher_of
from salt.registry import teachers
from salt.train import train
from salt_videomae import VideoMAETeacher
from salt_videomae.encoder import default_num_heads, sinusoid_table

transformers = pytest.importorskip("transformers")  # the reference implementation (dev only)

GEOMETRY = {"data.num_frames": 4, "data.image_size": 32, "student.name": "vit_tiny"}
SMALL = dict(
    image_size=32,
    patch_size=16,
    num_channels=3,
    num_frames=4,
    tubelet_size=2,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
)


@pytest.fixture(scope="module")
def cfg():
    return build_config(overrides=GEOMETRY)


def hf_model(seed: int = 0, **overrides):
    """A random VideoMAEModel whose biases and norms are not at their (trivial) init values."""
    torch.manual_seed(seed)
    config = transformers.VideoMAEConfig(**{**SMALL, **overrides})
    model = transformers.VideoMAEModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def reference(model, video: torch.Tensor) -> torch.Tensor:
    """HF's last hidden state for our ``[B, C, T, H, W]`` clip (HF takes ``[B, T, C, H, W]``)."""
    with torch.no_grad():
        return model(pixel_values=video.permute(0, 2, 1, 3, 4)).last_hidden_state


def clip(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def hf_to_original(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """HF VideoMAEModel names (transformers 5 in memory) -> original VideoMAE encoder names."""
    out = {
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
    }
    renames = {
        "norm1": "layernorm_before",
        "attn.proj": "attention.output.dense",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    for i in range(depth):
        hf, orig = f"encoder.layer.{i}.", f"blocks.{i}."
        attn = hf + "attention.attention."
        out[orig + "attn.qkv.weight"] = torch.cat(
            [sd[attn + f"{p}.weight"] for p in ("query", "key", "value")]
        )
        if attn + "query.bias" in sd:
            out[orig + "attn.q_bias"] = sd[attn + "query.bias"]
            out[orig + "attn.v_bias"] = sd[attn + "value.bias"]
        for new, old in renames.items():
            for leaf in ("weight", "bias"):
                out[f"{orig}{new}.{leaf}"] = sd[f"{hf}{old}.{leaf}"]
    if "layernorm.weight" in sd:
        out["norm.weight"], out["norm.bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    return out


def assert_matches(teacher, model, video=None):
    video = clip() if video is None else video
    out = teacher(video)
    ref = reference(model, video)
    assert out.shape == ref.shape == (video.shape[0], 8, model.config.hidden_size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_mean_pooling", [True, False])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_hf_directory_matches_transformers(tmp_path, cfg, use_mean_pooling, qkv_bias):
    model = hf_model(use_mean_pooling=use_mean_pooling, qkv_bias=qkv_bias)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    teacher = teachers.create(f"videomae:{tmp_path}", geometry=cfg.geometry)
    assert isinstance(teacher, VideoMAETeacher)
    assert teacher.teacher_dim == 32 and teacher.grid == (2, 2, 2)
    assert (teacher.encoder.norm is None) == use_mean_pooling
    assert (teacher.encoder.blocks[0].attn.q_bias is None) == (not qkv_bias)
    assert_matches(teacher, model)


def test_pytorch_model_bin_in_either_bias_naming(tmp_path, cfg):
    model = hf_model(seed=2, use_mean_pooling=False)
    model.save_pretrained(tmp_path / "safe")
    config = (tmp_path / "safe" / "config.json").read_text()
    on_disk = load_file(tmp_path / "safe" / "model.safetensors")  # q_bias / v_bias
    in_memory = model.state_dict()  # query.bias / value.bias (transformers 5)
    assert any(k.endswith("q_bias") for k in on_disk)
    for name, state in (("disk", on_disk), ("memory", in_memory)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(config)
        torch.save(dict(state), tmp_path / name / "pytorch_model.bin")
        assert_matches(teachers.create(f"videomae:{tmp_path / name}", geometry=cfg.geometry), model)


def test_pretraining_and_classification_checkpoints_keep_only_the_encoder(tmp_path, cfg):
    encoder = hf_model(seed=3, use_mean_pooling=False)
    pretrain = transformers.VideoMAEForPreTraining(encoder.config)
    pretrain.videomae.load_state_dict(encoder.state_dict())
    pretrain.save_pretrained(tmp_path / "pretrain")
    keys = load_file(tmp_path / "pretrain" / "model.safetensors")
    assert "mask_token" in keys and any(k.startswith("decoder.") for k in keys)
    assert_matches(
        teachers.create(f"videomae:{tmp_path / 'pretrain'}", geometry=cfg.geometry), encoder
    )

    pooled = hf_model(seed=4, use_mean_pooling=True)
    classifier = transformers.VideoMAEForVideoClassification(pooled.config)
    classifier.videomae.load_state_dict(pooled.state_dict())
    classifier.save_pretrained(tmp_path / "finetuned")
    assert any(
        k.startswith("fc_norm.") for k in load_file(tmp_path / "finetuned/model.safetensors")
    )
    assert_matches(
        teachers.create(f"videomae:{tmp_path / 'finetuned'}", geometry=cfg.geometry), pooled
    )


# Original checkpoints carry no config: heads are inferred as width / 64, so use width 128.
ORIGINAL = dict(hidden_size=128, num_attention_heads=2, intermediate_size=256, layer_norm_eps=1e-6)


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_original_pth_matches_transformers(tmp_path, cfg, kind):
    model = hf_model(seed=5, use_mean_pooling=kind == "finetune", **ORIGINAL)
    encoder = hf_to_original(model.state_dict(), depth=2)
    if kind == "pretrain":  # PretrainVisionTransformer: encoder.* plus the decoder
        sd = {f"encoder.{k}": v for k, v in encoder.items()}
        sd["decoder.blocks.0.attn.qkv.weight"] = torch.randn(48, 16)
        sd["decoder.norm.weight"] = torch.ones(16)
        sd["decoder.head.weight"] = torch.randn(1536, 16)
        sd["encoder_to_decoder.weight"] = torch.randn(16, 128)
        sd["mask_token"] = torch.zeros(1, 1, 16)
        checkpoint = {"model": sd, "epoch": 799, "args": argparse.Namespace(model="vit")}
    else:  # finetuned VisionTransformer with mean pooling: no `norm`, a classifier head
        sd = {**encoder, "fc_norm.weight": torch.ones(128), "fc_norm.bias": torch.zeros(128)}
        sd["head.weight"], sd["head.bias"] = torch.randn(400, 128), torch.zeros(400)
        checkpoint = {"module": sd}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")

    teacher = teachers.create(f"videomae:{tmp_path / 'checkpoint.pth'}", geometry=cfg.geometry)
    assert teacher.teacher_dim == 128 and teacher.grid == (2, 2, 2)
    assert teacher.encoder.arch.num_heads == 2 and teacher.encoder.arch.mlp_dim == 256
    assert_matches(teacher, model)


def test_videomae_v2_hub_directory_uses_its_model_config(tmp_path, cfg):
    model = hf_model(seed=6, use_mean_pooling=True, hidden_size=48, num_attention_heads=3)
    sd = {f"model.{k}": v for k, v in hf_to_original(model.state_dict(), depth=2).items()}
    sd["model.fc_norm.weight"], sd["model.fc_norm.bias"] = torch.ones(48), torch.zeros(48)
    save_file(sd, tmp_path / "model.safetensors")
    model_config = {
        "img_size": 32,
        "patch_size": 16,
        "embed_dim": 48,
        "depth": 2,
        "num_heads": 3,  # width 48 / 64 could not be inferred: the config says it
        "mlp_ratio": 64 / 48,
        "qkv_bias": True,
        "layer_norm_eps": 1e-12,
        "init_values": 0.0,
        "use_learnable_pos_emb": False,
        "tubelet_size": 2,
        "use_mean_pooling": True,
        "num_frames": 4,
        "cos_attn": False,
    }
    (tmp_path / "config.json").write_text(json.dumps({"model_config": model_config}))
    assert_matches(teachers.create(f"videomae:{tmp_path}", geometry=cfg.geometry), model)


def test_layer_scale_and_positions_of_original_checkpoints(tmp_path, cfg):
    model = hf_model(seed=7, use_mean_pooling=False, **ORIGINAL)
    sd = hf_to_original(model.state_dict(), depth=2)
    for i in range(2):  # zero layer scale: every block is the identity
        sd[f"blocks.{i}.gamma_1"] = torch.zeros(128)
        sd[f"blocks.{i}.gamma_2"] = torch.zeros(128)
    torch.save(sd, tmp_path / "ls.pth")
    teacher = teachers.create(f"videomae:{tmp_path / 'ls.pth'}", geometry=cfg.geometry)
    assert teacher.encoder.arch.layer_scale

    video = clip()
    tokens = torch.nn.functional.conv3d(
        video, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(2, 16, 16)
    )
    tokens = tokens.flatten(2).transpose(1, 2) + reference_positions(8, 128)
    expected = torch.nn.functional.layer_norm(
        tokens, (128,), sd["norm.weight"], sd["norm.bias"], eps=1e-6
    )
    torch.testing.assert_close(teacher(video), expected, atol=1e-5, rtol=1e-5)


def reference_positions(n: int, d: int) -> torch.Tensor:
    table = [[p / 10000 ** (2 * (j // 2) / d) for j in range(d)] for p in range(n)]
    return torch.tensor(
        [[math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(row)] for row in table]
    )


def test_sinusoid_table_and_head_defaults():
    torch.testing.assert_close(sinusoid_table(8, 6), reference_positions(8, 6).float())
    assert default_num_heads(1280) == 16  # ViT-H: head width 80, not 64
    assert default_num_heads(1408) == 16 and default_num_heads(768) == 12
    assert default_num_heads(128) == 2
    with pytest.raises(ValueError, match="config.json"):
        default_num_heads(100)


@pytest.fixture
def hf_dir(tmp_path):
    model = hf_model(seed=8, use_mean_pooling=False)
    model.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_missing_and_unexpected_keys_are_named(hf_dir, cfg):
    weights = hf_dir / "model.safetensors"
    sd = load_file(weights)
    gone = "encoder.layer.1.attention.attention.key.weight"
    save_file({k: v for k, v in sd.items() if k != gone}, weights)
    with pytest.raises(ValueError, match=rf"missing keys: {gone}") as err:
        teachers.create(f"videomae:{hf_dir}", geometry=cfg.geometry)
    assert str(weights) in str(err.value)

    extra = "encoder.layer.0.attention.attention.bonus"
    save_file({**sd, extra: torch.zeros(3)}, weights)
    with pytest.raises(ValueError, match=rf"unexpected keys: {extra}"):
        teachers.create(f"videomae:{hf_dir}", geometry=cfg.geometry)

    save_file({**sd, "videomae_head.weight": torch.zeros(3)}, weights)
    with pytest.raises(ValueError, match="unexpected keys: videomae_head.weight"):
        teachers.create(f"videomae:{hf_dir}", geometry=cfg.geometry)


def test_original_checkpoint_strictness(tmp_path, cfg):
    model = hf_model(seed=9, use_mean_pooling=False, **ORIGINAL)
    sd = {f"encoder.{k}": v for k, v in hf_to_original(model.state_dict(), 2).items()}
    torch.save(
        {"model": {k: v for k, v in sd.items() if k != "encoder.blocks.1.norm2.bias"}},
        tmp_path / "a.pth",
    )
    with pytest.raises(ValueError, match=r"missing keys: encoder\.blocks\.1\.norm2\.bias"):
        teachers.create(f"videomae:{tmp_path / 'a.pth'}", geometry=cfg.geometry)
    torch.save({"model": {**sd, "encoder.blocks.0.attn.extra": torch.zeros(1)}}, tmp_path / "b.pth")
    with pytest.raises(ValueError, match=r"unexpected keys: encoder\.blocks\.0\.attn\.extra"):
        teachers.create(f"videomae:{tmp_path / 'b.pth'}", geometry=cfg.geometry)


def test_config_that_disagrees_with_the_weights_is_a_shape_error(hf_dir, cfg):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight: \(64, 32\) in the file"):
        teachers.create(f"videomae:{hf_dir}", geometry=cfg.geometry)


def test_missing_path_and_incomplete_directory(tmp_path, cfg):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a Hugging Face"):
        teachers.create(f"videomae:{tmp_path / 'nope'}", geometry=cfg.geometry)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="needs config.json and one of model.safetensors"):
        teachers.create(f"videomae:{tmp_path / 'empty'}", geometry=cfg.geometry)
    with pytest.raises(ValueError, match="needs a checkpoint path"):
        teachers.create("videomae", geometry=cfg.geometry)


def test_hf_weights_file_alone_asks_for_the_directory(hf_dir, cfg):
    with pytest.raises(ValueError, match="pass the directory"):
        teachers.create(f"videomae:{hf_dir / 'model.safetensors'}", geometry=cfg.geometry)


def test_teacher_is_frozen_and_checked_against_the_student_grid(hf_dir):
    cfg = build_config(overrides={**GEOMETRY, "teacher.spec": f"videomae:{hf_dir}"})
    teacher = teacher_of(cfg)
    assert not teacher.training and not teacher.encoder.training
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()  # a parent switching to train mode does not unfreeze it
    assert not teacher.encoder.training
    out = teacher(clip())
    assert out.grad_fn is None and not out.requires_grad
    assert teachers.get("videomae").plugin == "videomae"

    # Analytic FLOPs: embedding + 2 blocks of (qkv, proj, fc1, fc2, attention) over 8 tokens.
    n, d, mlp = 8, 32, 64
    per_token = 2 * (4 * d * d + 2 * d * mlp) + 4 * n * d
    assert teacher.forward_flops() == 2 * n * (3 * 2 * 16 * 16) * d + 2 * n * per_token

    with pytest.raises(ValueError, match=r"\(C, T, H, W\) = \(3, 4, 32, 32\)"):
        teacher(torch.zeros(1, 3, 8, 32, 32))

    wrong = build_config(
        overrides={**GEOMETRY, "data.image_size": 64, "teacher.spec": cfg.teacher.spec}
    )
    with pytest.raises(
        ValueError, match=r"\(2, 2, 2\) grid but the student's clips make a \(2, 4, 4\)"
    ):
        teacher_of(wrong)


def test_training_against_a_videomae_teacher(hf_dir, tiny_overrides):
    cfg = build_config(
        overrides={
            **tiny_overrides,
            "data.num_frames": 4,
            "data.image_size": 32,
            "teacher.spec": f"videomae:{hf_dir}",
            "train.steps": 3,
            "train.checkpoint_every": 3,
        }
    )
    result = train(cfg)
    records = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
