"""Export of a run's encoder, and exported encoders (or runs) as the next teacher."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from salt.checkpoints import load_checkpoint
from salt.cli import main
from salt.config import apply_overrides
from salt.export import export_encoder, load_encoder
from salt.models import student_of
from salt.registry import teachers
from salt.train import train


@pytest.fixture
def pixel_run(tiny_config):
    return train(apply_overrides(tiny_config, {"train.steps": 4, "run.name": "stage1"})).run_dir


def test_export_writes_the_student_only_and_reloads_identically(
    pixel_run, tmp_path, tiny_config, capsys
):
    out = tmp_path / "enc"
    assert main(["export", str(pixel_run), "--out", str(out)]) == 0
    assert "exported the student encoder" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (
        config["architecture"] == "vit_tiny"
        and config["num_frames"] == 4
        and config["image_size"] == 64
    )
    assert config["summary"]["checkpoint_step"] == 4 and "min_loss" in config["summary"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert not any(k.startswith(("predictor", "mask_token")) for k in f.keys())

    encoder, _ = load_encoder(out)
    student = student_of(tiny_config)
    student.load_state_dict(load_checkpoint(pixel_run)["student"])
    video = torch.randn(2, 3, 4, 64, 64)
    assert torch.equal(encoder(video), student.eval()(video))

    assert main(["export", str(pixel_run), "--out", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["export", str(pixel_run), "--out", str(out), "--force"]) == 0


def test_a_tampered_export_is_refused_naming_the_keys(pixel_run, tmp_path):
    """Weights written through the export writer (their checksum matches) whose keys are not
    the architecture's are still refused."""
    from salt.export import write_export

    out = export_encoder(pixel_run, tmp_path / "enc")
    model, config = load_encoder(out)
    state = dict(model.state_dict())
    state.pop("norm.bias")
    state["extra.weight"] = torch.zeros(1)
    write_export(out, state, config)
    with pytest.raises(
        ValueError, match=r"missing keys \['norm.bias'\], unexpected keys \['extra.weight'\]"
    ):
        load_encoder(out)


def test_stage1_export_then_stage2_with_the_encoder_as_teacher(pixel_run, tmp_path, tiny_config):
    out = export_encoder(pixel_run, tmp_path / "teacher")
    for name, spec in (("from-export", f"encoder:{out}"), ("from-run", f"encoder:{pixel_run}")):
        cfg = apply_overrides(
            tiny_config, {"teacher.spec": spec, "train.steps": 3, "run.name": name}
        )
        teacher = teachers.create(spec, geometry=cfg.geometry)
        assert teacher.teacher_dim == 192
        result = train(cfg)
        assert result.step == 3
    bad = apply_overrides(tiny_config, {"teacher.spec": f"encoder:{out}", "data.image_size": 32})
    with pytest.raises(ValueError, match="takes 4-frame clips at 64px"):
        teachers.create(bad.teacher.spec, geometry=bad.geometry)
    with pytest.raises(FileNotFoundError, match="no encoder at"):
        teachers.create(f"encoder:{tmp_path / 'nothing'}", geometry=tiny_config.geometry)
