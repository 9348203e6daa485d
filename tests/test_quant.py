"""8-bit latent caches: the codes' error, the stored shards, reads, and training from them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import salt.cache.build as cache_build
from salt.batch import Sample, collate
from salt.cache import CacheError, LatentCache, quantization_error, verify_cache
from salt.cli import main
from salt.config import apply_overrides, build_config
from salt.models import teacher_of
from salt.quant import QuantizedLatents, dense, quantize, squared_error
from salt.train import train

GEOMETRY = {"data.num_frames": 4, "data.image_size": 32, "data.frame_step": 2}


def relative_mse(x: torch.Tensor, q: QuantizedLatents) -> float:
    err, ref = squared_error(x, q)
    return err / ref


def test_codes_keep_latents_with_outlier_channels_and_tokens():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, 96, generator=gen)
    x[..., 5] *= 80  # a massive-activation channel, as ViT outputs have
    x[:, 7] *= 30  # a high-norm token
    x[0, :, 11] = 0  # a dead channel
    q = quantize(x)
    assert q.codes.dtype == torch.int8 and q.codes.shape == x.shape
    assert q.token_scale.shape == (3, 64) and q.channel_scale.shape == (3, 96)
    assert int(q.codes.abs().max()) == 127
    assert relative_mse(x, q) < 2e-4  # the bar is 5e-3
    back = q.dequantize()
    assert back.dtype == torch.float32 and torch.equal(back[0, :, 11], torch.zeros(64))
    # Without the channel scale the outlier channel takes every token's range: the error of
    # the ordinary channels grows ~100x. The two-level scale is what keeps them.
    ordinary = [c for c in range(96) if c != 5]
    per_token = x.abs().amax(-1, keepdim=True) / 127
    naive = torch.round(x / per_token) * per_token
    err_naive = (naive - x)[..., ordinary].square().sum()
    err_ours = (back - x)[..., ordinary].square().sum()
    assert err_ours * 20 < err_naive
    assert dense(q).equal(back) and dense(x.half()).dtype == torch.float32


def test_non_finite_latents_are_refused():
    x = torch.zeros(2, 4, 8)
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(x)


def test_batches_stack_codes_and_refuse_mixed_targets():
    video = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    codes = [quantize(torch.randn(4, 6)) for _ in range(2)]
    batch = collate([Sample(video, targets=c, index=i) for i, c in enumerate(codes)])
    assert isinstance(batch.targets, QuantizedLatents) and batch.targets.shape == (2, 4, 6)
    assert batch.to("cpu").targets.dequantize()[1].equal(codes[1].dequantize())
    with pytest.raises(ValueError, match="8-bit and dense"):
        collate([Sample(video, targets=codes[0]), Sample(video, targets=torch.zeros(4, 6))])


@pytest.fixture
def cfg(tiny_overrides):
    return build_config(
        overrides={
            **tiny_overrides,
            **GEOMETRY,
            "data.spec": "synthetic:16",
            "teacher.spec": "random:vit_tiny",
        }
    )


def build(cfg, out, dtype):
    return cache_build.build_cache(
        teacher_of(cfg), cfg, out, dtype=dtype, shard_size=8, workers=0, progress=False
    )


def test_an_int8_cache_stores_codes_reports_its_error_and_trains_like_fp16(cfg, tmp_path, capsys):
    fp16 = build(cfg, tmp_path / "fp16", "float16")
    int8 = build(cfg, tmp_path / "int8", "int8")
    assert int8.meta["dtype"] == "int8" and verify_cache(int8.path) == []
    with safe_open(str(int8.path / "shard_00000.safetensors"), framework="pt") as f:
        stored = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}
    assert stored == {
        "latents": ("I8", [8, 8, 192]),
        "token_scale": ("F32", [8, 8]),
        "channel_scale": ("F32", [8, 192]),
    }
    train_fp16, train_int8 = fp16.split("train"), int8.split("train")
    read = train_int8.latents(3)
    assert isinstance(read, QuantizedLatents)
    reference = train_fp16.latents(3).float()
    err = (read.dequantize() - reference).square().sum() / reference.square().sum()
    assert 0 < err < 1e-3
    # The recorded error is the same measure over the whole cache; info prints it.
    error = quantization_error(int8)
    assert error is not None and 0 < error < 1e-3 and quantization_error(fp16) is None
    assert main(["cache", "info", str(int8.path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dtype"] == "int8" and info["int8_relative_mse"] == pytest.approx(error)

    # Same seeds and masks: the two runs' losses agree to the codes' error.
    losses = {}
    for name, cache in (("fp16", fp16), ("int8", int8)):
        run = apply_overrides(
            cfg, {"teacher.spec": f"cached:{cache.path}", "train.steps": 4, "run.name": name}
        )
        rows = (train(run).run_dir / "metrics.jsonl").read_text().splitlines()
        losses[name] = torch.tensor([json.loads(r)["loss"] for r in rows])
    assert len(losses["int8"]) == 4
    assert torch.allclose(losses["int8"], losses["fp16"], rtol=1e-3), losses


def test_damaged_scales_are_caught(cfg, tmp_path):
    int8 = build(cfg, tmp_path / "int8", "int8")
    shard = int8.path / "shard_00001.safetensors"
    with safe_open(str(shard), framework="pt") as f:
        scale = f.get_tensor("token_scale")
    data = bytearray(shard.read_bytes())
    at = bytes(data).find(scale[2].numpy().tobytes())  # row 2 of the token scales
    data[at] ^= 0x40
    shard.write_bytes(bytes(data))
    fresh = LatentCache(int8.path).split("train")
    fresh.latents(8 + 1)  # an intact row of the same shard still reads
    with pytest.raises(CacheError, match="row 2 of 'token_scale' fails its checksum"):
        fresh.latents(8 + 2)
    assert any("checksum mismatch" in p for p in verify_cache(int8.path))
