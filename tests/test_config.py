"""Run configuration (salt/config.py)."""

from __future__ import annotations

import json

import attrs
import pytest

from salt.config import (
    DEMO_PROFILE,
    SECTIONS,
    Config,
    OptimConfig,
    apply_overrides,
    build_config,
    flatten,
    from_dict,
    load_file,
    parse_value,
)


def test_defaults_are_the_reference_recipe():
    cfg = Config()
    assert cfg.profile == "recipe"
    o = cfg.optim
    assert (o.lr, o.min_lr, o.warmup_steps) == (2e-4, 1e-5, 2000)
    assert o.betas == (0.9, 0.95) and isinstance(o.betas, tuple)
    assert (o.weight_decay, o.final_weight_decay) == (0.04, 0.4)
    p = cfg.predictor
    assert (p.name, p.width, p.depth, p.heads) == ("transformer", 512, 12, 8)
    assert (cfg.data.num_frames, cfg.data.image_size) == (16, 224)
    assert (cfg.student.name, cfg.student.patch_size, cfg.student.tubelet_size) == ("vit_l", 16, 2)
    assert cfg.student.pos_embed == "sincos"
    assert cfg.mask.name == "multiblock" and cfg.mask.options == {}
    assert cfg.loss.name == "mse" and cfg.loss.options == {}
    assert cfg.teacher.spec == "cached:v1huge"
    assert cfg.grid == (8, 14, 14)


def test_configs_are_frozen():
    cfg = Config()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.optim = OptimConfig()  # type: ignore[misc]


def test_build_config_without_arguments_is_the_recipe():
    assert build_config() == Config()


def test_demo_profile_applies_every_demo_override():
    cfg = build_config("demo")
    assert cfg.profile == "demo"
    flat = flatten(cfg.to_dict())
    for key, value in DEMO_PROFILE.items():
        assert flat[key] == value, key
    assert cfg.grid == (4, 7, 7)
    # Fields the demo does not mention keep the recipe value.
    assert cfg.optim.betas == (0.9, 0.95) and cfg.mask.name == "multiblock"


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose 'recipe' or 'demo'"):
        build_config("fast")


def test_overrides_set_fields_and_options():
    cfg = build_config(
        overrides={
            "optim.lr": 1e-3,
            "train.batch_size": 4,
            "loss.name": "mse+vicreg",
            "loss.options.vicreg.cov_weight": 0,
            "mask.options.temporal_scale": 0.5,
        }
    )
    assert cfg.optim.lr == 1e-3 and cfg.train.batch_size == 4
    assert cfg.loss.options == {"vicreg": {"cov_weight": 0}}
    assert cfg.mask.options == {"temporal_scale": 0.5}
    assert Config().loss.options == {}  # the defaults' option tables are not shared


def test_file_then_overrides_win_over_the_profile(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[optim]\nlr = 5e-4\nwarmup_steps = 7\n\n"
        "[train]\nbatch_size = 3\n\n"
        "[mask]\nname = 'tube'\n[mask.options]\nratio = 0.8\n"
    )
    cfg = build_config("demo", file=path, overrides={"optim.warmup_steps": 3})
    assert cfg.profile == "demo"
    assert cfg.optim.lr == 5e-4  # file beats the demo's 1e-3
    assert cfg.optim.warmup_steps == 3  # explicit override beats the file
    assert cfg.train.batch_size == 3
    assert cfg.mask.name == "tube" and cfg.mask.options == {"ratio": 0.8}
    assert cfg.student.name == "vit_tiny"  # untouched demo setting


def test_json_file_round_trips_a_saved_config(tmp_path):
    cfg = build_config("demo", overrides={"loss.options.vicreg.var_weight": 2.0})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_file(path) == json.loads(path.read_text())
    assert build_config(file=path) == cfg
    assert from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "name,content,error,match",
    [
        ("missing.toml", None, FileNotFoundError, "does not exist"),
        ("run.ini", "a: 1", ValueError, r"must end in \.toml, \.yaml, \.yml or \.json"),
        ("bad.toml", "[optim]\nlrr = 1\n", KeyError, "has no field 'lrr'"),
        ("bad_section.toml", "[model]\nx = 1\n", KeyError, "unknown config key 'model.x'"),
    ],
)
def test_bad_files_are_reported(tmp_path, name, content, error, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match):
        build_config(file=path)


def test_unknown_field_error_names_the_valid_fields():
    with pytest.raises(KeyError, match="has no field 'lrr'") as info:
        build_config(overrides={"optim.lrr": 1e-3})
    valid = [f.name for f in attrs.fields(OptimConfig)]
    assert f"Valid: {', '.join(valid)}" in str(info.value)


def test_unknown_section_error_names_the_sections():
    with pytest.raises(KeyError, match="SECTION one of data, student, teacher") as info:
        build_config(overrides={"model.depth": 3})
    assert all(s in str(info.value) for s in SECTIONS)
    with pytest.raises(KeyError, match="unknown config key 'lr'"):
        build_config(overrides={"lr": 3})


def test_from_dict_rejects_unknown_keys_and_sections():
    with pytest.raises(KeyError, match=r"unknown config key\(s\) in \[optim\]: lrr, wd. Valid: lr"):
        from_dict({"optim": {"lrr": 1, "wd": 2}})
    with pytest.raises(KeyError, match="unknown config section 'model'. Valid: profile, data"):
        from_dict({"model": {}})
    with pytest.raises(ValueError, match=r"section \[optim\] must be a table, got 3"):
        from_dict({"optim": 3})


def test_options_key_on_a_section_without_options_gets_a_helpful_error():
    with pytest.raises(KeyError) as info:
        build_config(overrides={"optim.options.x": 1})
    assert "Valid:" in str(info.value), str(info.value)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,match",
    [
        (
            "data.num_frames",
            15,
            "num_frames=15 is not a multiple of student.tubelet_size=2; "
            "pick a frame count such as 14",
        ),
        (
            "data.image_size",
            100,
            "image_size=100 is not a multiple of student.patch_size=16; pick a size such as 96",
        ),
        (
            "student.patch_size",
            48,
            "image_size=224 is not a multiple of student.patch_size=48; pick a size such as 192",
        ),
    ],
)
def test_clip_geometry_must_tile(key, value, match):
    with pytest.raises(ValueError, match=match):
        build_config(overrides={key: value})


def test_geometry_that_tiles_sets_the_grid():
    cfg = build_config(
        overrides={"data.num_frames": 8, "student.tubelet_size": 4, "data.image_size": 256}
    )
    assert cfg.grid == (2, 16, 16)


@pytest.mark.parametrize(
    "key,value,error,match",
    [
        ("optim.lr", 0, ValueError, "optim.lr must be a finite number > 0, got 0"),
        ("optim.lr", True, ValueError, "optim.lr must be a finite number > 0, got True"),
        ("optim.lr", float("inf"), ValueError, "optim.lr must be a finite number > 0, got inf"),
        ("optim.min_lr", -1e-5, ValueError, "optim.min_lr must be a finite number >= 0"),
        ("optim.min_lr", 1.0, ValueError, r"optim.min_lr \(1.0\) must not exceed optim.lr"),
        ("optim.betas", [0.9], ValueError, r"optim.betas must be 2 numbers in \[0, 1\)"),
        ("data.mean", [0.5], ValueError, r"data.mean must be 3 numbers \(R, G, B\)"),
        ("data.mean", "abc", ValueError, "data.mean must be 3 numbers"),
        ("data.std", [0.2, 0.0, 0.2], ValueError, "data.std must be > 0 in every channel"),
        ("data.fps", float("nan"), ValueError, "data.fps must be a finite number >= 0"),
        ("train.batch_size", True, ValueError, "train.batch_size must be a positive integer"),
        ("run.name", "../elsewhere", ValueError, "run.name must be a folder name"),
        ("optim.max_warmup_fraction", 1.0, ValueError, r"must be in \[0, 1\), got 1.0"),
        ("student.drop_path", 1.5, ValueError, r"drop_path must be in \[0, 1\)"),
        ("student.pos_embed", "rope", ValueError, "pos_embed"),
        ("train.precision", "fp16", ValueError, "precision"),
        ("train.batch_size", 0, ValueError, "batch_size"),
        ("data.num_frames", 16.0, ValueError, "num_frames"),
        ("student.name", " ", ValueError, "name must be a non-empty spec string"),
        ("mask.options", [1], ValueError, "options must be a table of options, got \\[1\\]"),
        ("student.grad_checkpointing", "yes", ValueError, "grad_checkpointing"),
    ],
)
def test_bad_values_are_rejected(key, value, error, match):
    with pytest.raises(error, match=match):
        apply_overrides(Config(), {key: value})


# --- parsing and flattening ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("1e-3", 1e-3),
        ("2000", 2000),
        ("true", True),
        ("false", False),
        ("[0.9, 0.95]", [0.9, 0.95]),
        ('"vit_l"', "vit_l"),
        ("vit_l", "vit_l"),
        ("cached:v1huge", "cached:v1huge"),
        ("mse+vicreg", "mse+vicreg"),
        ("{cov_weight = 0}", {"cov_weight": 0}),
        ("", ""),
    ],
)
def test_parse_value_reads_toml_and_falls_back_to_text(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parsed_values_feed_overrides():
    cfg = build_config(
        overrides={
            k: parse_value(v)
            for k, v in [
                ("optim.lr", "5e-4"),
                ("student.name", "vit_b"),
                ("optim.betas", "[0.8, 0.9]"),
                ("train.compile", "true"),
            ]
        }
    )
    assert cfg.optim.lr == 5e-4 and cfg.student.name == "vit_b"
    assert cfg.optim.betas == (0.8, 0.9) and cfg.train.compile is True


def test_flatten_keeps_options_tables_whole():
    tree = {
        "optim": {"lr": 1},
        "loss": {"name": "mse", "options": {"vicreg": {"a": 1}}},
        "profile": "demo",
    }
    assert flatten(tree) == {
        "optim.lr": 1,
        "loss.name": "mse",
        "loss.options": {"vicreg": {"a": 1}},
        "profile": "demo",
    }


def test_to_dict_is_json_ready_and_complete():
    tree = Config().to_dict()
    json.dumps(tree)
    assert set(tree) == {"profile", *SECTIONS}
    for section, cls in SECTIONS.items():
        assert set(tree[section]) == {f.name for f in attrs.fields(cls)}


# --- YAML, salt config, names -----------------------------------------------------------------


def test_a_yaml_config_round_trips_through_print_config_and_config(tmp_path, capsys):
    from salt.cli import main

    args = [
        "train",
        "--profile",
        "demo",
        "--set",
        "optim.lr=3e-4",
        "--set",
        "data.mean=[0.5,0.4,0.3]",
    ]
    args += ["--set", "mask.options={temporal_scale = 0.5}"]
    assert main([*args, "--print-config", "--format", "yaml"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("profile: demo") and "lr: 0.0003" in text
    (tmp_path / "run.yaml").write_text(text)
    (tmp_path / "run.yml").write_text("optim:\n  lr: 0.0005\ntrain:\n  steps: 7\n")
    again = build_config(file=tmp_path / "run.yaml")
    assert again == build_config(
        profile="demo",
        overrides={
            "optim.lr": 3e-4,
            "data.mean": [0.5, 0.4, 0.3],
            "mask.options": {"temporal_scale": 0.5},
        },
    )
    partial = build_config(file=tmp_path / "run.yml")
    assert (partial.optim.lr, partial.train.steps, partial.profile) == (5e-4, 7, "recipe")


def test_a_broken_yaml_file_is_a_one_line_error_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ValueError, match=r"config file '.*bad.yaml' does not parse"):
        build_config(file=bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must hold a table of sections"):
        build_config(file=bad)
    obj = tmp_path / "obj.yaml"
    obj.write_text("optim: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ValueError, match="does not parse"):  # safe_load: no Python objects
        build_config(file=obj)


def test_salt_config_lists_every_field_with_type_default_and_help(capsys):
    from salt.cli import main
    from salt.config import HELP, flatten

    assert main(["config", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["field"] for r in rows} == set(flatten(build_config().to_dict())) == set(HELP)
    assert all(r["help"] and r["type"] for r in rows)
    lr = next(r for r in rows if r["field"] == "optim.lr")
    assert (lr["type"], lr["default"]) == ("float", 2e-4)
    assert main(["config", "batch", "--profile", "demo"]) == 0
    out = capsys.readouterr().out
    assert "train.batch_size" in out and " 8 " in out and "optim.lr" not in out
    assert main(["config", "nonsense"]) == 2


def test_print_config_checks_plugin_names_and_fields_check_their_ranges(capsys):
    from salt.cli import main

    assert main(["train", "--print-config", "--set", "mask.name=multiblok"]) == 2
    assert "Did you mean 'multiblock'" in capsys.readouterr().err
    assert main(["train", "--print-config", "--set", "loss.name=mse+vicrek"]) == 2
    assert "Did you mean 'vicreg'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"predictor.heads \(5\) must divide predictor.width"):
        build_config(overrides={"predictor.heads": 5})
    with pytest.raises(ValueError, match="data.mean must be 3 numbers"):
        build_config(overrides={"data.mean": [0.5]})


def test_yaml_numbers_mean_numbers_whatever_yaml_thinks(tmp_path):
    """YAML 1.1 reads `1e-4` (no dot) as a string; the field's type decides instead."""
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "optim:\n  lr: 1e-4\n  min_lr: .5e-6\n  betas: [9e-1, '0.95']\ntrain:\n  steps: '30'\n"
    )
    cfg = build_config(file=path)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.betas) == (1e-4, 0.5e-6, (0.9, 0.95))
    assert cfg.train.steps == 30 and isinstance(cfg.train.steps, int)
    json_path = tmp_path / "recipe.json"
    json_path.write_text('{"optim": {"lr": "1e-4"}}')
    assert build_config(file=json_path).optim.lr == 1e-4
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: fast\n")  # not a number: the validator still says so
    with pytest.raises(
        ValueError, match=r"bad.yaml': optim.lr must be a finite number > 0, got 'fast'"
    ):
        build_config(file=bad)


def test_every_wrong_field_of_a_file_is_reported_at_once(tmp_path):
    path = tmp_path / "wrong.toml"
    path.write_text("[optim]\nlr = -1\ngrad_clip = -2\n[train]\nsteps = 1.5\n")
    with pytest.raises(ValueError) as err:
        build_config(file=path)
    message = str(err.value)
    assert message.startswith(f"config file {str(path)!r}: 3 config errors: ")
    for field in ("optim.lr must be", "optim.grad_clip must be", "train.steps must be"):
        assert field in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("broken.yaml", "optim:\n  lr: 1e-3\n   steps: [1, 2\n", r"line 3, column \d+: "),
        ("broken.json", '{"optim": {"lr": 1e-3,}}', r"line 1, column 23: Expecting property name"),
    ],
)
def test_a_file_that_does_not_parse_names_its_line_and_column(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"config file '.*{name}' does not parse: {where}"):
        build_config(file=path)
