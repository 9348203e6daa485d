"""Run configuration: frozen attrs classes whose defaults are the reference ViT-L recipe."""

from __future__ import annotations

import json
import math
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

import attrs
from attrs import field, validators

# The video decoders (salt/decoders.py) a data config may name; auto picks per file.
DECODER_CHOICES = ("auto", "decord", "pyav", "torchcodec")


def _number(value) -> bool:
    """A finite int or float (not a bool, not nan or inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int(inst, attr, value, low: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "a positive integer" if low else "an integer >= 0"
        raise ValueError(f"{attr.name} must be {kind}, got {value!r}")


def _pos_int(inst, attr, value):
    _int(inst, attr, value, 1)


def _nonneg_int(inst, attr, value):
    _int(inst, attr, value, 0)


def _pos_float(inst, attr, value):
    if not _number(value) or value <= 0:
        raise ValueError(f"{attr.name} must be a finite number > 0, got {value!r}")


def _nonneg_float(inst, attr, value):
    if not _number(value) or value < 0:
        raise ValueError(f"{attr.name} must be a finite number >= 0, got {value!r}")


def _fraction(inst, attr, value):
    if not _number(value) or not 0 <= value < 1:
        raise ValueError(f"{attr.name} must be in [0, 1), got {value!r}")


def _rgb(positive: bool):
    """Three finite numbers, one per RGB channel (all > 0 for a std)."""

    def check(inst, attr, value):
        if len(value) != 3 or not all(_number(v) for v in value):
            raise ValueError(f"{attr.name} must be 3 numbers (R, G, B), got {list(value)!r}")
        if positive and min(value) <= 0:
            raise ValueError(f"{attr.name} must be > 0 in every channel, got {list(value)!r}")

    return check


def _betas(inst, attr, value):
    if len(value) != 2 or not all(_number(v) and 0 <= v < 1 for v in value):
        raise ValueError(f"{attr.name} must be 2 numbers in [0, 1), got {list(value)!r}")


def _run_name(inst, attr, value):
    """One path component, as typed: "" asks for a generated name (student-teacher-time)."""
    if not isinstance(value, str):
        raise ValueError(f"run.name must be a folder name, got {value!r}")
    if value == "":
        return
    why = None
    if "/" in value or "\\" in value:
        why = "it holds a path separator ('/' or '\\'); --out picks the parent folder"
    elif value.strip() in (".", ".."):
        why = "'.' and '..' name existing folders, not a run's own"
    elif value != value.strip():
        why = "it starts or ends with whitespace, which is easy to miss when typing the path"
    elif any(unicodedata.category(c) == "Cc" for c in value):
        why = "it holds a control character (a tab, newline or escape)"
    if why is not None:
        raise ValueError(f"run.name must be a folder name, got {value!r}: {why}; choose another")


def _one_of(*choices: str):
    def check(inst, attr, value):
        if value not in choices:
            shown = ", ".join(c or '"" (empty)' for c in choices)
            raise ValueError(f"{attr.name} must be one of {shown}, got {value!r}")

    return check


def _tuple(value):
    """A list or tuple as a tuple; anything else is kept for the validator to refuse."""
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _spec(inst, attr, value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attr.name} must be a non-empty spec string, got {value!r}")


def _optional_spec(inst, attr, value):
    if not isinstance(value, str) or (value and not value.strip()):
        raise ValueError(f"{attr.name} must be a spec string or empty (none), got {value!r}")


def _optional_name(inst, attr, value):
    """A name as typed, or empty: the tracker's environment variable (or its default) decides."""
    if not isinstance(value, str) or value != value.strip():
        raise ValueError(
            f"{attr.name} must be a name (no space at either end), or empty: the environment "
            f"variable decides; got {value!r}"
        )


def _specs(inst, attr, value):
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{attr.name} must be a list of names, got {list(value)!r}")


def _options(inst, attr, value):
    if not isinstance(value, dict):
        raise ValueError(f"{attr.name} must be a table of options, got {value!r}")


@attrs.frozen
class DataConfig:
    """Where clips come from and how they are sampled."""

    spec: str = field(default="synthetic", validator=_spec)
    # Held-out videos (a data spec) scored every train.eval_every steps when the training
    # data is videos; the built-in data and caches bring their own `val` split.
    val_spec: str = field(default="", validator=_optional_spec)
    num_frames: int = field(default=16, validator=_pos_int)
    frame_step: int = field(default=4, validator=_pos_int)
    image_size: int = field(default=224, validator=_pos_int)
    fps: float = field(
        default=0.0, validator=_nonneg_float
    )  # > 0: sample at this rate, not frame_step
    num_workers: int = field(default=4, validator=_nonneg_int)
    # auto: the fastest installed decoder that reads each file; or decord, pyav, torchcodec
    decoder: str = field(default="auto", validator=_one_of(*DECODER_CHOICES))
    # Unreadable videos are skipped; above this share of those seen the run stops.
    max_bad_fraction: float = field(default=0.05, validator=_fraction)
    # Train from a cache whose build did not finish (on purpose); otherwise that is an error.
    allow_incomplete_cache: bool = field(default=False, validator=validators.instance_of(bool))
    # Built-in clips (synthetic, motion) kept in memory once rendered, in GB per process
    # (each DataLoader worker keeps its own); later epochs reuse them. 0: render every time.
    keep_clips_gb: float = field(default=1.0, validator=_nonneg_float)
    mean: tuple[float, float, float] = field(
        default=(0.485, 0.456, 0.406), converter=_tuple, validator=_rgb(False)
    )
    std: tuple[float, float, float] = field(
        default=(0.229, 0.224, 0.225), converter=_tuple, validator=_rgb(True)
    )


@attrs.frozen
class StudentConfig:
    """The student encoder trained on visible tokens."""

    name: str = field(default="vit_l", validator=_spec)
    patch_size: int = field(default=16, validator=_pos_int)
    tubelet_size: int = field(default=2, validator=_pos_int)
    pos_embed: str = field(default="sincos", validator=_one_of("sincos", "learned"))
    drop_path: float = field(default=0.0, validator=_fraction)
    grad_checkpointing: bool = field(default=False, validator=validators.instance_of(bool))


@attrs.frozen
class TeacherConfig:
    """The frozen teacher whose latents are the targets."""

    spec: str = field(default="cached:v1huge", validator=_spec)


@attrs.frozen
class PredictorConfig:
    """The predictor regressing teacher latents at target positions."""

    name: str = field(default="transformer", validator=_spec)
    width: int = field(default=512, validator=_pos_int)
    depth: int = field(default=12, validator=_pos_int)
    heads: int = field(default=8, validator=_pos_int)
    drop_path: float = field(default=0.0, validator=_fraction)

    def __attrs_post_init__(self):
        if self.width % self.heads:
            raise ValueError(
                f"predictor.heads ({self.heads}) must divide predictor.width ({self.width})"
            )


@attrs.frozen
class MaskConfig:
    """The masker and its options (passed to the masker's factory)."""

    name: str = field(default="multiblock", validator=_spec)
    options: dict = field(factory=dict, validator=_options)
    # "batch": each batch's contexts cut to its shortest (V-JEPA); "fixed": one context
    # length per group for the whole run, so shapes never change (what a compiled step
    # wants); "auto": fixed when train.compile is on, else batch.
    lengths: str = field(default="auto", validator=_one_of("auto", "batch", "fixed"))


TARGET_NORMS = ("none", "layer", "instance")
# Data salt generates (no files, any clip geometry): data specs KIND[:N]; the last two are
# labelled by motion alone (salt.motion, salt.natural).
BUILT_IN = ("synthetic", "motion", "motion-natural")
MOTION_BENCHMARKS = BUILT_IN[1:]
# The student checkpoint a quick start scores and exports: its best by held-out loss, or last.
STUDENT_CHECKPOINTS = ("best", "last")


@attrs.frozen
class LossConfig:
    """Loss terms joined by '+', e.g. 'mse+vicreg'; options per term name."""

    name: str = field(default="mse", validator=_spec)
    options: dict = field(factory=dict, validator=_options)
    # What the loss compares against: the teacher's latents as they are ("none"), each
    # token standardized over its channels ("layer"), or each channel standardized over a
    # clip's tokens ("instance": a clip's constant part - colours, layout - drops out).
    target_norm: str = field(default="none", validator=validators.in_(TARGET_NORMS))


@attrs.frozen
class OptimConfig:
    """AdamW with warmup-cosine LR and a cosine weight-decay schedule on the decay group."""

    lr: float = field(default=2e-4, validator=_pos_float)
    min_lr: float = field(default=1e-5, validator=_nonneg_float)
    warmup_steps: int = field(default=2000, validator=_nonneg_int)
    # Short runs (demos, tests) would otherwise spend all their steps warming up.
    max_warmup_fraction: float = field(default=0.1, validator=_fraction)
    betas: tuple[float, float] = field(default=(0.9, 0.95), converter=_tuple, validator=_betas)
    eps: float = field(default=1e-8, validator=_pos_float)
    weight_decay: float = field(default=0.04, validator=_nonneg_float)
    final_weight_decay: float = field(default=0.4, validator=_nonneg_float)
    grad_clip: float = field(default=10.0, validator=_nonneg_float)  # 0 disables clipping

    def __attrs_post_init__(self):
        if self.min_lr > self.lr:
            raise ValueError(f"optim.min_lr ({self.min_lr}) must not exceed optim.lr ({self.lr})")


@attrs.frozen
class TrainConfig:
    """Length, batch, precision and bookkeeping of a training run."""

    steps: int = field(default=100_000, validator=_nonneg_int)
    epochs: int = field(default=0, validator=_nonneg_int)  # > 0 overrides steps
    batch_size: int = field(default=24, validator=_pos_int)  # per process
    accum_steps: int = field(default=1, validator=_pos_int)
    seed: int = field(default=0, validator=_nonneg_int)
    device: str = field(default="auto", validator=_spec)
    precision: str = field(default="bf16", validator=_one_of("bf16", "fp32"))
    compile: bool = field(default=False, validator=validators.instance_of(bool))
    log_every: int = field(default=10, validator=_pos_int)
    checkpoint_every: int = field(default=1000, validator=_pos_int)
    # Held-out distillation loss every this many steps (and at the last), logged as
    # val_loss; the lowest one's weights are kept as checkpoints/best.pt. 0: never.
    eval_every: int = field(default=1000, validator=_nonneg_int)
    eval_batches: int = field(default=4, validator=_pos_int)  # held-out clips: x batch_size
    keep_checkpoints: int = field(default=2, validator=_nonneg_int)  # 0 keeps all
    max_nonfinite: int = field(default=5, validator=_pos_int)
    peak_tflops: float = field(default=0.0, validator=_nonneg_float)  # 0 measures it
    smoothing: float = field(default=0.9, validator=_fraction)
    rebound_threshold: float = field(default=0.05, validator=_nonneg_float)
    progress: bool = field(default=True, validator=validators.instance_of(bool))


@attrs.frozen
class RunConfig:
    """Where the run directory goes."""

    out: str = field(default="runs", validator=_spec)
    name: str = field(default="", validator=_run_name)
    # Where metrics go besides metrics.jsonl (always written): tensorboard, wandb[:PROJECT]
    loggers: tuple[str, ...] = field(default=(), converter=_tuple, validator=_specs)
    # The W&B run's project, entity, group, tags and mode. Empty: W&B's environment
    # variable (WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_TAGS, WANDB_MODE), else
    # W&B's default (project: salt-vla).
    wandb_project: str = field(default="", validator=_optional_name)
    wandb_entity: str = field(default="", validator=_optional_name)
    wandb_group: str = field(default="", validator=_optional_name)
    wandb_tags: tuple[str, ...] = field(default=(), converter=_tuple, validator=_specs)
    wandb_mode: str = field(default="", validator=_one_of("", "online", "offline", "disabled"))


@attrs.frozen
class ClipGeometry:
    """How a clip is cut and tokenized: what models and teachers are built for."""

    num_frames: int
    image_size: int
    patch_size: int
    tubelet_size: int
    frame_step: int = 4
    fps: float = 0.0

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip."""
        return (
            self.num_frames // self.tubelet_size,
            self.image_size // self.patch_size,
            self.image_size // self.patch_size,
        )

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def model_kwargs(self) -> dict[str, int]:
        """The keywords every student factory takes."""
        return {
            "num_frames": self.num_frames,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "tubelet_size": self.tubelet_size,
        }


@attrs.frozen
class Config:
    """Everything a training run needs; saved resolved in each run directory."""

    profile: str = field(default="recipe", validator=validators.in_(["recipe", "demo"]))
    data: DataConfig = field(factory=DataConfig)
    student: StudentConfig = field(factory=StudentConfig)
    teacher: TeacherConfig = field(factory=TeacherConfig)
    predictor: PredictorConfig = field(factory=PredictorConfig)
    mask: MaskConfig = field(factory=MaskConfig)
    loss: LossConfig = field(factory=LossConfig)
    optim: OptimConfig = field(factory=OptimConfig)
    train: TrainConfig = field(factory=TrainConfig)
    run: RunConfig = field(factory=RunConfig)

    def __attrs_post_init__(self):
        check_geometry(self)

    @property
    def geometry(self) -> ClipGeometry:
        """The clip geometry of the data and student."""
        d, s = self.data, self.student
        return ClipGeometry(
            d.num_frames, d.image_size, s.patch_size, s.tubelet_size, d.frame_step, d.fps
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a clip."""
        return self.geometry.grid

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return attrs.asdict(self)

    def dumps(self, fmt: str = "json") -> str:
        """The whole config as a JSON or YAML file's text (either reads back as --config)."""
        plain = json.loads(json.dumps(self.to_dict()))  # tuples -> lists
        if fmt == "json":
            return json.dumps(plain, indent=2)
        if fmt == "yaml":
            import yaml

            return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False).rstrip()
        raise ValueError(f"config format must be json or yaml, got {fmt!r}")


def check_geometry(cfg: Config) -> None:
    """Clips must tile exactly into tubelets."""
    d, s = cfg.data, cfg.student
    if d.num_frames % s.tubelet_size:
        raise ValueError(
            f"data.num_frames={d.num_frames} is not a multiple of student.tubelet_size="
            f"{s.tubelet_size}; pick a frame count such as {d.num_frames - d.num_frames % s.tubelet_size or s.tubelet_size}"
        )
    if d.image_size % s.patch_size:
        raise ValueError(
            f"data.image_size={d.image_size} is not a multiple of student.patch_size="
            f"{s.patch_size}; pick a size such as {(d.image_size // s.patch_size or 1) * s.patch_size}"
        )


# Overrides applied on top of the recipe when a run should fit a CPU in a minute or two.
DEMO_PROFILE: dict[str, Any] = {
    "profile": "demo",
    "data.num_frames": 8,
    "data.image_size": 112,
    "data.num_workers": 1,
    "student.name": "vit_tiny",
    "teacher.spec": "random:vit_tiny",
    "predictor.width": 192,
    "predictor.depth": 4,
    "predictor.heads": 4,
    "optim.lr": 1e-3,
    "optim.min_lr": 1e-4,
    "optim.warmup_steps": 10,
    "optim.grad_clip": 1.0,
    "train.steps": 100,
    "train.batch_size": 8,
    "train.precision": "fp32",
    "train.log_every": 5,
    "train.checkpoint_every": 50,
    "train.eval_every": 50,
    "train.eval_batches": 2,
}


def parse_value(text: str) -> Any:
    """Read an override's value as TOML (numbers, booleans, arrays), else as a string."""
    if text in ("True", "False"):  # Python spelling of TOML's true/false
        return text == "True"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.startswith("[") and text.endswith("]"):  # [tensorboard, wandb]: bare words
            inner = text[1:-1].strip()
            return [parse_value(v.strip()) for v in inner.split(",")] if inner else []
        return text


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "student": StudentConfig,
    "teacher": TeacherConfig,
    "predictor": PredictorConfig,
    "mask": MaskConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "run": RunConfig,
}


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    # `options` tables are free-form (they go to a plugin's factory); everything else is fixed.
    has_options = keys[0] in SECTIONS and "options" in attrs.fields_dict(SECTIONS[keys[0]])
    if len(keys) >= 3 and has_options and keys[1] == "options":
        node = tree[keys[0]]["options"]
        for key in keys[2:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        return
    if len(keys) == 1 and keys[0] == "profile":
        tree["profile"] = value
        return
    if len(keys) < 2 or keys[0] not in SECTIONS:
        raise KeyError(
            f"unknown config key {dotted!r}: use SECTION.FIELD with SECTION one of "
            f"{', '.join(SECTIONS)}"
        )
    section, name = keys[0], keys[1]
    valid = [f.name for f in attrs.fields(SECTIONS[section])]
    if name not in valid or len(keys) > 2:
        raise KeyError(
            f"unknown config key {dotted!r}: [{section}] has no field {name!r}. "
            f"Valid: {', '.join(valid)}"
        )
    tree[section][name] = value


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A new config with ``{"section.field": value}`` overrides applied and validated."""
    tree = cfg.to_dict()
    for dotted, value in overrides.items():
        _set_path(tree, dotted, value)
    return from_dict(tree)


def from_dict(tree: dict[str, Any]) -> Config:
    """Build a Config from nested dicts (a TOML/JSON file or ``to_dict()`` output); every
    wrong field is reported in one error."""
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in tree.items():
        if key == "profile":
            kwargs[key] = value
            continue
        if key not in SECTIONS:
            raise KeyError(f"unknown config section {key!r}. Valid: profile, {', '.join(SECTIONS)}")
        cls = SECTIONS[key]
        if not isinstance(value, dict):
            raise ValueError(f"config section [{key}] must be a table, got {value!r}")
        known = [f.name for f in attrs.fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise KeyError(
                f"unknown config key(s) in [{key}]: {', '.join(unknown)}. Valid: {', '.join(known)}"
            )
        value = {name: coerce(cls, name, v) for name, v in value.items()}
        # Each field alone first, so that every wrong field is reported at once; then
        # the section whole, for the rules that tie its fields together.
        fields = attrs.fields_dict(cls)
        for name, v in value.items():
            f = fields[name]
            try:  # the field's own rule only: rules across fields wait for the whole
                v = f.converter(v) if f.converter is not None else v
                if f.validator is not None:
                    f.validator(None, f, v)
            except (TypeError, ValueError) as err:
                problems.append(_field_error(key, known, err))
            except AttributeError:  # a rule that reads other fields
                pass
        if problems:
            continue
        try:
            kwargs[key] = cls(**value)
        except (TypeError, ValueError) as err:  # attrs: (message, attribute, type, value)
            problems.append(_field_error(key, known, err))
    if problems:
        count = f"{len(problems)} config errors: " if len(problems) > 1 else ""
        raise ValueError(count + "; ".join(problems))
    return Config(**kwargs)


def _field_error(section: str, known: list[str], err: Exception) -> str:
    """attrs' message about a field, named ``section.field``."""
    message = str(err.args[0]) if err.args else str(err)
    name, _, rest = message.partition(" ")
    if name.strip("'") in known:  # "lr must be ..." -> "optim.lr must be ..."
        return f"{section}.{name.strip(chr(39))} {rest}"
    if message.startswith(f"{section}."):
        return message
    return f"config [{section}]: {message}"


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` as the field's declared type where it is a number written as text: YAML 1.1
    reads ``1e-4`` (no dot) as a string, so a YAML file, a JSON file and ``--set`` must all
    mean the same number. Anything else is left for the field's validator to judge."""
    field_type = attrs.fields_dict(cls).get(name)
    kind = str(field_type.type) if field_type is not None else ""
    if kind == "float" and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value)
    if kind == "int" and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    if kind.startswith("tuple[float") and isinstance(value, list | tuple):
        return [
            float(v) if isinstance(v, str) and NUMBER.fullmatch(v.strip()) else v for v in value
        ]
    return value


CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


class DuplicateKeyError(ValueError):
    """A config file that sets one key twice: which value was meant is unknowable."""

    def __init__(self, key: str, where: tuple[str, ...] = (), line: int = 0, first: int = 0):
        super().__init__(key, where, line, first)
        self.key, self.where, self.line, self.first = key, where, line, first

    def __str__(self) -> str:
        inside = f"in {'.'.join(self.where)!r}" if self.where else "at the top level"
        at = f"line {self.line}: " if self.line else ""
        earlier = f" (first on line {self.first})" if self.first else ""
        return f"{at}key {self.key!r} appears twice {inside}{earlier}; keep one"


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config file into nested dicts; a
    file that does not parse, holds no table or repeats a key is an error naming it (and
    the key and line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {str(path)!r} must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            tree = json.loads(text, object_pairs_hook=_refuse_repeats)
        elif path.suffix == ".toml":
            tree = tomllib.loads(text)
        else:  # safe_load: plain data only, never Python objects
            _check_yaml_keys(yaml.compose(text, Loader=yaml.SafeLoader))
            tree = yaml.safe_load(text)
    except DuplicateKeyError as err:
        if not err.line:  # JSON's hook knows the key only: JSON is YAML, which knows lines
            err = _locate_repeat(text) or err
        raise ValueError(f"config file {str(path)!r} {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} {_toml_error(text, err)}") from None
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"config file {str(path)!r} does not parse: {_parse_error(err)}") from None
    if not isinstance(tree, dict):
        raise ValueError(
            f"config file {str(path)!r} must hold a table of sections, got a {type(tree).__name__}"
        )
    return tree


def _parse_error(err: Exception) -> str:
    """A YAML or JSON parse error in one line, led by its line and column."""
    mark = getattr(err, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or "bad YAML"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}, column {err.colno}: {err.msg}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; a key given twice is a :class:`DuplicateKeyError`."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen[key] = value
    return seen


def _check_yaml_keys(node, where: tuple[str, ...] = (), seen: set | None = None) -> None:
    """Walk a composed YAML document: a mapping that repeats a key is a
    :class:`DuplicateKeyError` naming the key, where it is and both lines (merge keys
    ``<<`` aside: what they bring in is overridden on purpose)."""
    import yaml

    seen = set() if seen is None else seen
    if node is None or id(node) in seen:  # an empty document, or an alias already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}  # each key's first line
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if (key.tag, key.value) in lines:
                    raise DuplicateKeyError(key.value, where, line, lines[key.tag, key.value])
                lines[key.tag, key.value] = line
            label = key.value if isinstance(key, yaml.ScalarNode) else "?"
            _check_yaml_keys(value, (*where, label), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_yaml_keys(item, (*where, f"[{i}]"), seen)


def _locate_repeat(text: str) -> DuplicateKeyError | None:
    """The repeated key of a JSON text, with its lines (found by reading it as YAML)."""
    import yaml

    try:
        _check_yaml_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    except DuplicateKeyError as err:
        return err
    except yaml.YAMLError:  # JSON that YAML cannot read: the key alone is named
        pass
    return None


TOML_AT = re.compile(r"\(at line (\d+), column \d+\)")
TOML_TABLE = re.compile(r"\s*\[+\s*([^\[\]]+?)\s*\]+\s*(#.*)?$")  # [table] or [[array]]


def _toml_error(text: str, err: tomllib.TOMLDecodeError) -> str:
    """What is wrong with a TOML text, in one line; a key or table given twice is named,
    with its line and table."""
    message = str(err)
    found = TOML_AT.search(message)
    repeated = "overwrite" in message or "twice" in message or "Duplicate" in message
    if found is None or not repeated:
        return f"does not parse: {message}"
    number = int(found.group(1))
    lines = text.splitlines()
    here = lines[number - 1] if number <= len(lines) else ""
    header = TOML_TABLE.match(here)
    if header:
        return f"line {number}: table [{header.group(1)}] appears twice; merge the two into one"
    table = next(
        (m.group(1) for m in map(TOML_TABLE.match, reversed(lines[: number - 1])) if m), ""
    )
    inline = re.search(r"key '([^']+)'", message)
    key = inline.group(1) if inline else here.split("=", 1)[0].strip().strip("\"'")
    inside = f"in [{table}]" if table else "at the top level"
    inside = "in the inline table on that line" if inline else inside
    return f"line {number}: key {key!r} appears twice {inside}; keep one"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, keeping ``options`` tables whole."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "options":
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def build_config(
    profile: str = "recipe",
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Recipe defaults, then the profile, then a config file, then explicit overrides."""
    cfg = Config()
    if profile == "demo":
        cfg = apply_overrides(cfg, DEMO_PROFILE)
    elif profile != "recipe":
        raise ValueError(f"unknown profile {profile!r}; choose 'recipe' or 'demo'")
    if file is not None:
        try:
            cfg = apply_overrides(cfg, flatten(load_file(file)))
        except (KeyError, ValueError) as err:
            message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            if str(file) in message:
                raise
            raise type(err)(f"config file {str(file)!r}: {message}") from None
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


# One line per field: what `salt config` prints beside its type and default.
HELP: dict[str, str] = {
    "profile": "recipe (the full ViT-L recipe) or demo (CPU-sized); set by --profile",
    "data.spec": "a folder, CSV manifest, SSv2 JSON, lerobot:PATH, or synthetic[:N] / motion[:N]",
    "data.val_spec": "held-out videos scored every train.eval_every steps when data.spec is "
    "videos (the built-in data and caches have their own val split)",
    "data.num_frames": "frames per clip",
    "data.frame_step": "take every N-th frame (when data.fps is 0)",
    "data.image_size": "clip height and width in pixels (a multiple of student.patch_size)",
    "data.fps": "> 0: sample frames at this rate instead of every frame_step-th",
    "data.num_workers": "DataLoader workers decoding clips, per process",
    "data.decoder": "video decoder: auto (the fastest installed that reads a file), decord, "
    "pyav, torchcodec",
    "data.max_bad_fraction": "share of unreadable videos (skipped) above which a run stops",
    "data.allow_incomplete_cache": "train from a cache whose build did not finish",
    "data.keep_clips_gb": "GB of built-in clips (synthetic, motion) kept in memory once "
    "rendered, per process; 0 renders every time",
    "data.mean": "per-channel (R, G, B) mean the clips are normalized with",
    "data.std": "per-channel (R, G, B) standard deviation the clips are normalized with",
    "student.name": "student encoder (see `salt plugins`), e.g. vit_l",
    "student.patch_size": "patch side in pixels",
    "student.tubelet_size": "frames per token",
    "student.pos_embed": "position embedding: sincos (fixed, 3-D) or learned",
    "student.drop_path": "stochastic depth rate of the student's blocks",
    "student.grad_checkpointing": "recompute block activations in the backward pass (less "
    "memory, ~30% more compute); student and predictor",
    "teacher.spec": "frozen teacher: cached:NAME, pixels, encoder:PATH, videomae:PATH, random:ARCH",
    "predictor.name": "predictor (see `salt plugins`)",
    "predictor.width": "predictor width",
    "predictor.depth": "predictor blocks",
    "predictor.heads": "predictor attention heads (must divide the width)",
    "predictor.drop_path": "stochastic depth rate of the predictor's blocks",
    "mask.name": "masker (see `salt plugins`): multiblock, tube[:RATIO], random[:RATIO], "
    "future[:FRACTION]",
    "mask.options": "the masker's options, a table (e.g. {temporal_scale = 0.5})",
    "mask.lengths": "context length per mask group: batch (each batch's shortest), fixed "
    "(one per run: what compile wants) or auto (fixed when train.compile)",
    "loss.name": "loss terms joined by '+', e.g. mse or mse+vicreg",
    "loss.options": "per-term options, a table (e.g. {vicreg = {weight = 0.1}})",
    "loss.target_norm": "teacher latents as they are (none), standardized per token (layer) "
    "or per channel over a clip's tokens (instance)",
    "optim.lr": "peak learning rate (AdamW), after warmup",
    "optim.min_lr": "learning rate at the end of the cosine decay",
    "optim.warmup_steps": "linear warmup steps",
    "optim.max_warmup_fraction": "short runs warm up for at most this share of their steps",
    "optim.betas": "AdamW betas",
    "optim.eps": "AdamW epsilon",
    "optim.weight_decay": "weight decay at the start (weights only; cosine schedule)",
    "optim.final_weight_decay": "weight decay at the end",
    "optim.grad_clip": "clip the gradient norm to this (0: no clipping)",
    "train.steps": "optimizer steps (when train.epochs is 0)",
    "train.epochs": "> 0: passes over the data instead of train.steps",
    "train.batch_size": "clips per process per micro-step",
    "train.accum_steps": "micro-steps per optimizer step (gradient accumulation)",
    "train.seed": "seed of weights, clip views and masks",
    "train.device": "auto (a GPU when there is one), cpu, cuda, cuda:N",
    "train.precision": "bf16 (autocast on a GPU) or fp32",
    "train.compile": "torch.compile the student and predictor",
    "train.log_every": "steps per metrics line",
    "train.checkpoint_every": "steps per checkpoint",
    "train.eval_every": "steps per held-out distillation loss (val_loss; also at the last "
    "step); the lowest one's weights are kept as checkpoints/best.pt (0: never)",
    "train.eval_batches": "held-out batches (of train.batch_size clips) scored each time, "
    "the same clips and masks every time",
    "train.keep_checkpoints": "newest checkpoints kept (0: all)",
    "train.max_nonfinite": "non-finite steps in a row before the run stops",
    "train.peak_tflops": "the device's peak for MFU (0: measured, or a known GPU's datasheet)",
    "train.smoothing": "EMA smoothing of the loss in the run summary",
    "train.rebound_threshold": "how far above its minimum the last loss may end before the "
    "summary flags a rebound",
    "train.progress": "show a progress bar",
    "run.out": "folder the run directory is made in",
    "run.name": "run directory name (empty: student-teacher-time)",
    "run.loggers": "metric loggers besides metrics.jsonl: tensorboard, wandb[:PROJECT] "
    "(see `salt plugins`)",
    "run.wandb_project": "W&B project (empty: WANDB_PROJECT, else salt-vla); wandb:PROJECT "
    "in run.loggers says the same",
    "run.wandb_entity": "W&B entity, a user or team (empty: WANDB_ENTITY, else your default)",
    "run.wandb_group": "W&B run group (empty: WANDB_RUN_GROUP, else none)",
    "run.wandb_tags": "W&B run tags, a list (empty: WANDB_TAGS, comma-separated, else none)",
    "run.wandb_mode": "W&B mode: online, offline (on disk in RUN/wandb, `wandb sync` uploads "
    "it) or disabled (empty: WANDB_MODE, else online)",
}


def describe_fields(cfg: Config | None = None) -> list[dict[str, Any]]:
    """Every config field: dotted name, type, value in ``cfg`` (default: the recipe's) and
    its help line."""
    cfg = cfg or Config()
    values = flatten(cfg.to_dict())
    rows = [{"field": "profile", "type": "str", "default": values["profile"]}]
    for section, cls in SECTIONS.items():
        for f in attrs.fields(cls):
            name = f"{section}.{f.name}"
            rows.append({"field": name, "type": str(f.type), "default": values[name]})
    for row in rows:
        row["help"] = HELP.get(row["field"], "")
    return rows
