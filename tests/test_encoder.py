"""VideoEncoder (salt/encoder.py): loading, inputs, pooling, other geometries, errors."""

from __future__ import annotations

import copy
import json
import pickle
import shutil
import subprocess
import sys

import attrs
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from videos import write_video

from salt import VideoEncoder
from salt.checkpoints import load_checkpoint
from salt.config import build_config
from salt.data import VideoDataset, normalize_clips
from salt.export import export_encoder
from salt.models import student_of
from salt.train import train
from salt.video import discover
from salt_vit.pos_embed import resample_3d, sincos_3d

B, T, C, S = 2, 4, 3, 64  # the tiny config's clips: 4 frames at 64px, patch 16, tubelet 2
TOKENS = (T // 2) * (S // 16) ** 2  # 32


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step tiny run, its config and its export."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("encoder")
    overrides = {**TINY, "run.out": str(root / "runs"), "run.name": "r", "train.steps": 4}
    cfg = build_config(overrides=overrides)
    run = train(cfg).run_dir
    return run, cfg, export_encoder(run, root / "export")


@pytest.fixture(scope="module")
def encoder(trained) -> VideoEncoder:
    return VideoEncoder.from_pretrained(trained[2])


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    """uint8 ``[B, T, C, H, W]``."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (B, T, C, S, S), dtype=torch.uint8, generator=gen)


def test_tokens_equal_the_checkpoint_student_on_the_normalized_clip(trained, encoder, video):
    run, cfg, _ = trained
    student = student_of(cfg)
    student.load_state_dict(load_checkpoint(run)["student"])
    expected = student.eval()(normalize_clips(video, cfg.data.mean, cfg.data.std))
    tokens = encoder(video)
    assert tokens.shape == (B, TOKENS, 192)
    assert torch.equal(tokens, expected)
    assert torch.equal(VideoEncoder.from_pretrained(run)(video), tokens)  # a run dir works too
    weights = trained[2] / "model.safetensors"
    assert torch.equal(VideoEncoder.from_pretrained(weights)(video), tokens)


def test_attributes_describe_the_training_geometry(trained, encoder):
    cfg = trained[1]
    assert (encoder.embed_dim, encoder.num_frames, encoder.image_size) == (192, 4, 64)
    assert (encoder.tubelet_size, encoder.patch_size, encoder.grid) == (2, 16, (2, 4, 4))
    assert encoder.mean == cfg.data.mean and encoder.std == cfg.data.std
    assert encoder.frame_step == cfg.data.frame_step
    assert encoder.config["architecture"] == "vit_tiny" and not encoder.training
    assert "vit_tiny" in repr(encoder) and "image_size=64" in repr(encoder)


def test_uint8_float_and_layouts_give_the_same_tokens(encoder, video):
    tokens = encoder(video)
    assert torch.equal(encoder(video.float() / 255), tokens)
    assert torch.equal(encoder(video.double() / 255), tokens)  # other floats are cast
    assert torch.equal(encoder(video.transpose(1, 2), layout="BCTHW"), tokens)


def test_pools(encoder, video):
    grid = encoder.encode(video, pool="none")
    assert grid.shape == (B, 2, 4, 4, 192)
    assert torch.equal(grid.reshape(B, TOKENS, 192), encoder(video))
    torch.testing.assert_close(encoder.encode(video), grid.mean(dim=(1, 2, 3)))
    frames = encoder.encode(video, pool="frames")
    assert frames.shape == (B, 2, 192)
    torch.testing.assert_close(frames, grid.mean(dim=(2, 3)))
    assert encoder.encode(video, pool="mean").shape == (B, 192)


@pytest.mark.parametrize(
    "frames,height,width,grid",
    [
        (4, 64, 64, (2, 4, 4)),
        (8, 64, 64, (4, 4, 4)),
        (2, 32, 32, (1, 2, 2)),
        (6, 96, 48, (3, 6, 3)),
    ],
)
def test_other_frame_counts_and_sizes(encoder, frames, height, width, grid):
    clip = torch.rand(1, frames, C, height, width)
    n = grid[0] * grid[1] * grid[2]
    assert encoder(clip).shape == (1, n, 192)
    assert encoder.encode(clip, pool="none").shape == (1, *grid, 192)
    assert encoder.encode(clip, pool="frames").shape == (1, grid[0], 192)
    x = encoder.preprocess(clip)
    if grid == encoder.grid:  # the training geometry keeps the stored positions
        assert torch.equal(encoder(clip), encoder.model(x))
    else:  # sin-cos positions are exact for any grid
        torch.testing.assert_close(
            encoder.model.pos_embed_for(grid, x.device)[0], sincos_3d(192, grid), atol=0, rtol=0
        )


def test_the_position_cache_is_not_state(trained, encoder):
    keys = set(encoder.state_dict())
    encoder(torch.rand(1, 8, C, 32, 32))
    assert set(encoder.state_dict()) == keys
    assert not any("grid_pos" in k for k in keys)
    clip = torch.rand(1, 8, C, 32, 32)
    assert torch.equal(copy.deepcopy(encoder)(clip), encoder(clip))
    assert torch.equal(pickle.loads(pickle.dumps(encoder))(clip), encoder(clip))


def test_learned_positions_are_resampled_for_other_grids(trained):
    config = {**json.loads((trained[2] / "config.json").read_text()), "pos_embed": "learned"}
    torch.manual_seed(0)
    learned = VideoEncoder.from_config(config)
    table = learned.model.pos_embed
    assert torch.equal(resample_3d(table, (2, 4, 4), (2, 4, 4)), table)
    wide = resample_3d(table, (2, 4, 4), (4, 8, 8))
    assert wide.shape == (1, 256, 192)
    assert wide.min() >= table.min() and wide.max() <= table.max()  # interpolated, not made up
    assert learned(torch.rand(1, 8, C, 128, 128)).shape == (1, 256, 192)
    with pytest.raises(ValueError, match="not on a"):
        resample_3d(table, (2, 4, 5), (4, 8, 8))


def test_save_pretrained_round_trips(trained, encoder, video, tmp_path):
    out = encoder.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(load_file(trained[2] / "model.safetensors"))
    assert json.loads((out / "config.json").read_text()) == encoder.config
    assert torch.equal(VideoEncoder.from_pretrained(out)(video), encoder(video))


def test_loading_an_export_never_unpickles(trained, monkeypatch, video, encoder):
    def refuse(*args, **kwargs):
        raise AssertionError("an export must load without unpickling")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert torch.equal(VideoEncoder.from_pretrained(trained[2])(video), encoder(video))


def test_a_tampered_export_is_refused(trained, tmp_path):
    out = shutil.copytree(trained[2], tmp_path / "tampered")
    state = load_file(out / "model.safetensors")
    state.pop("norm.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.safetensors does not match the checksum"):
        VideoEncoder.from_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    del config["weights_sha256"]  # as an export written before checksums: keys still checked
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"missing keys \['norm.bias'\], unexpected keys \['extra.weight'\]"
    ):
        VideoEncoder.from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="no encoder at"):
        VideoEncoder.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize(
    "make,kwargs,match",
    [
        (
            lambda: torch.zeros(T, C, S, S, dtype=torch.uint8),
            {},
            r"expected \(B, T, C, H, W\) with C=3, got \(4, 3, 64, 64\); add the batch dimension",
        ),
        (
            lambda: torch.zeros(B, C, T, S, S, dtype=torch.uint8),
            {},
            r"got \(2, 3, 4, 64, 64\); pass layout='BCTHW' if channels come second",
        ),
        (
            lambda: torch.zeros(B, T, C, S, S, dtype=torch.uint8),
            {"layout": "BCTHW"},
            r"expected \(B, C, T, H, W\) with C=3, got \(2, 4, 3, 64, 64\); pass "
            r"layout='BTCHW' if channels come third",
        ),
        (
            lambda: torch.zeros(B, T, S, S, C, dtype=torch.uint8),
            {},
            r"got \(2, 4, 64, 64, 3\); channels-last video needs video.permute\(0, 1, 4, 2, 3\)",
        ),
        (
            lambda: torch.zeros(B, T, 1, S, S, dtype=torch.uint8),
            {},
            r"with C=3, got \(2, 4, 1, 64, 64\)$",
        ),
        (
            lambda: torch.zeros(B, 3, C, S, S, dtype=torch.uint8),
            {},
            r"multiple of the tubelet size 2, got T=3 .*e.g. to T=2",
        ),
        (
            lambda: torch.zeros(B, T, C, 60, 72, dtype=torch.uint8),
            {},
            r"multiples of the patch size 16, got 60x72 .*e.g. to 48x64",
        ),
        (
            lambda: torch.zeros(B, T, C, S, S, dtype=torch.int32),
            {},
            r"expected uint8 video \(0..255\) or float video in \[0, 1\], got torch.int32",
        ),
        (
            lambda: torch.full((B, T, C, S, S), 255.0),
            {},
            r"expected float video in \[0, 1\], got values in \[255, 255\]; divide 0..255",
        ),
        (
            lambda: torch.full((B, T, C, S, S), -2.1),
            {},
            r"do not normalize it yourself",
        ),
        (lambda: torch.zeros(B, T, C, S, S), {"layout": "THWC"}, "layout must be"),
    ],
)
def test_bad_inputs_say_what_was_expected_and_how_to_fix_it(encoder, make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        encoder(make(), **kwargs)


def test_bad_options_are_refused(encoder, video):
    with pytest.raises(ValueError, match="pool must be one of 'mean', 'frames', 'none', got 'max'"):
        encoder.encode(video, pool="max")
    with pytest.raises(TypeError, match="torch.from_numpy"):
        encoder(video.numpy())
    with pytest.raises(ValueError, match=r"n=13 layers asked of a 12-block encoder"):
        encoder.get_intermediate_layers(video, n=13)
    with pytest.raises(ValueError, match=r"block indices \[12\] are not in \[-12, 11\]"):
        encoder.get_intermediate_layers(video, n=[12])


def test_get_intermediate_layers(encoder, video):
    last_two = encoder.get_intermediate_layers(video, n=2)
    assert len(last_two) == 2 and all(t.shape == (B, TOKENS, 192) for t in last_two)
    assert not torch.equal(last_two[0], last_two[1])
    normed = encoder.get_intermediate_layers(video, n=2, norm=True)
    assert torch.equal(normed[-1], encoder(video))
    assert torch.equal(encoder.model.norm(last_two[0]), normed[0])
    by_index = encoder.get_intermediate_layers(video, n=[10, -1])
    assert all(torch.equal(a, b) for a, b in zip(by_index, last_two, strict=True))
    other = encoder.get_intermediate_layers(torch.rand(1, 8, C, 32, 32), n=[-2])
    assert other[0].shape == (1, 16, 192)


def test_inference_mode_then_training_mode(trained, video):
    fresh = VideoEncoder.from_pretrained(trained[2])
    clip = torch.rand(1, 8, C, 32, 32)  # another grid: its positions are made in inference mode
    with torch.inference_mode():
        a, b = fresh(video), fresh(clip)
    assert torch.equal(a, fresh(video).detach())
    tokens = fresh(clip)  # the cached positions also serve autograd afterwards
    tokens.square().mean().backward()
    assert fresh.model.patch_embed.proj.weight.grad is not None
    assert torch.equal(b, tokens.detach())


def test_bf16(trained, encoder, video):
    half = VideoEncoder.from_pretrained(trained[2], device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.device.type == "cpu"
    with torch.inference_mode():
        tokens = half(video)
        other = half.encode(torch.rand(1, 8, C, 32, 32, dtype=torch.bfloat16), pool="frames")
    assert tokens.dtype == torch.bfloat16 and other.shape == (1, 4, 192)
    cosine = torch.nn.functional.cosine_similarity(tokens.float(), encoder(video), dim=-1)
    assert cosine.min() > 0.98


def test_freeze(trained, video):
    fresh = VideoEncoder.from_pretrained(trained[2]).train()
    assert fresh.freeze() is fresh
    assert not fresh.training and not fresh.model.training
    assert not any(p.requires_grad for p in fresh.parameters())
    assert not fresh(video).requires_grad


def test_torch_compile(encoder, video):
    # The eager backend traces with dynamo (fullgraph: no graph breaks) without the minutes
    # inductor takes to build C++ kernels on a small CPU; inductor gave the same tokens too.
    torch._dynamo.reset()
    compiled = torch.compile(encoder, backend="eager", fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(video), encoder(video))


def test_encode_file_samples_like_the_evaluation_loader(trained, encoder, tmp_path):
    path = write_video(tmp_path / "clips" / "clip.mp4", n=24, height=48, width=64)
    data = attrs.evolve(trained[1].data, spec=str(path.parent))
    clip = VideoDataset(discover(data.spec), data, train=False)[0].video  # uint8 [T, C, H, W]
    assert clip.shape == (T, C, S, S)
    assert torch.equal(encoder.encode_file(path), encoder.encode(clip[None]))
    assert encoder.encode_file(path, pool="none").shape == (1, 2, 4, 4, 192)


def test_import_salt_does_not_import_torch():
    code = (
        "import sys, salt; assert 'torch' not in sys.modules; "
        "from salt import VideoEncoder; assert VideoEncoder.__module__ == 'salt.encoder'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_single_frame_is_encoded_as_one_tubelet_of_it(encoder, video):
    image = video[:, :1]  # [B, 1, C, H, W]: one camera frame, as many policies take
    tokens = encoder(image)
    assert tokens.shape == (B, TOKENS // 2, 192)  # one time slice of 4x4 tokens
    repeated = image.repeat(1, encoder.tubelet_size, 1, 1, 1)
    assert torch.equal(tokens, encoder(repeated))
    assert encoder.encode(image, pool="frames").shape == (B, 1, 192)
    assert torch.equal(encoder(image.transpose(1, 2), layout="BCTHW"), tokens)


def test_output_hidden_states_gives_every_layer_in_one_pass(encoder, video):
    out = encoder(video, output_hidden_states=True)
    depth = len(encoder.model.blocks)
    assert len(out.hidden_states) == depth + 1
    assert all(h.shape == (B, TOKENS, 192) for h in out.hidden_states)
    assert torch.equal(out.last_hidden_state, encoder(video))
    assert torch.allclose(encoder.model.norm(out.hidden_states[-1]), out.last_hidden_state)
    last_two = encoder.get_intermediate_layers(video, n=2)
    assert torch.equal(last_two[0], out.hidden_states[-2])
    tokens, hidden = out  # a named tuple, as transformers' outputs unpack
    assert tokens is out.last_hidden_state and hidden is out.hidden_states


def test_an_encoder_from_a_config_saves_an_export_that_loads_back(tmp_path):
    config = {"architecture": "vit_tiny", "num_frames": 4, "image_size": 32}
    config.update({"patch_size": 16, "tubelet_size": 2, "mean": [0.5] * 3, "std": [0.25] * 3})
    torch.manual_seed(0)
    made = VideoEncoder.from_config(config)
    loaded = VideoEncoder.from_pretrained(made.save_pretrained(tmp_path / "e"))
    clip = torch.rand(1, 4, 3, 32, 32)
    assert torch.equal(loaded(clip), made(clip))
    with pytest.raises(ValueError, match=r"from_config: field 'std' must be > 0"):
        VideoEncoder.from_config({**config, "std": [0.0, 1.0, 1.0]})
