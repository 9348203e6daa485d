"""What the viewer's buttons do, as plain functions: no gradio import, testable without a page.

Every callback returns a result object whose ``message`` is empty on success and a sentence
for the page otherwise; bad input (a file that is not a video, a run without checkpoints, a
teacher of the wrong width, a path outside the allowed roots) never raises out of here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np

# One colour per mask group, as per run on the curves, cycling when there are more.
from salt.plots import PALETTE

log = logging.getLogger("salt.app.callbacks")

TOKEN_PX = 12  # pixels per token in the latent images


class PathRefused(ValueError):
    """A path outside the folders the viewer may read, or a Hub id it may not fetch."""


class UnreadableInput(ValueError):
    """A file inside the roots that is not what it should be; the message names the file
    and what is wrong, never what it holds."""


# ---------------------------------------------------------------------------------------
# Paths: every file a callback reads goes through confined() (or confined_tree() for a
# folder a loader reads from) right before it is opened.

MAX_TREE_FILES = 10_000  # a teacher folder holding more is not a model folder


def allowed_roots(runs: str | Path = "runs", extra: tuple[str | Path, ...] = ()) -> list[Path]:
    """Folders the viewer may read: runs, the salt cache, the working directory, gradio uploads."""
    from salt.cache import cache_home

    roots = [Path(runs), cache_home().parent, Path.cwd(), gradio_temp_dir(), *map(Path, extra)]
    return [r.expanduser().resolve() for r in roots]


def gradio_temp_dir() -> Path:
    """Where gradio stores uploads (``$GRADIO_TEMP_DIR``, default ``<tmp>/gradio``)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def confined(path: str | Path, roots: list[Path]) -> Path:
    """``path`` resolved (every symlink followed, the last one too), or :class:`PathRefused`
    if that lies outside ``roots``; open the returned path. The refusal reads the same
    whether or not anything is there."""
    resolved = Path(path).expanduser().resolve()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise PathRefused(
            f"not allowed: {str(path)!r} is outside the folders this viewer may read; copy it "
            f"under the runs folder or the working directory, or start the viewer with "
            f"`salt app --allow DIR`"
        )
    return resolved


def confined_tree(path: str | Path, roots: list[Path]) -> Path:
    """:func:`confined` for ``path`` and, when it is a folder, for everything under it
    (through linked folders too): what a loader given the folder may open."""
    top = confined(path, roots)
    if not top.is_dir():
        return top
    seen, todo, count = {top}, [top], 0
    while todo:
        for entry in sorted(todo.pop().iterdir()):
            target = confined(entry, roots)
            count += 1
            if count > MAX_TREE_FILES:
                raise PathRefused(
                    f"not allowed: {str(path)!r} holds more than {MAX_TREE_FILES} files; give "
                    f"the folder that holds the model itself"
                )
            if target.is_dir() and target not in seen:
                seen.add(target)
                todo.append(target)
    return top


def check_teacher_spec(spec: str, roots: list[Path], allow_hub: bool = False) -> str:
    """A teacher spec whose argument, when it names a path (absolute, ``~``, with a
    separator, or present in the working directory), lies inside ``roots`` with every file
    under it; a Hub id (``encoder:org/name``) is refused unless ``allow_hub``. A plain name
    such as ``random:vit_tiny`` is not a path and passes; ``cached:NAME`` is checked as the
    cache folder it names."""
    from salt.cache import resolve_cache
    from salt.hub import is_repo_id
    from salt.registry import parse_spec

    name, arg = parse_spec(spec)
    if not arg:
        return spec
    if is_repo_id(arg):
        if not allow_hub:
            raise PathRefused(
                f"teacher {spec!r} names a Hugging Face Hub repo; this viewer does not reach the "
                f"network unless started with `salt app --allow-hub` - or give a local folder"
            )
        return spec  # fetched into the Hub cache by the loader (config + weights only)
    if os.sep in arg or "/" in arg or arg.startswith("~") or Path(arg).exists():
        confined_tree(arg, roots)
    elif name == "cached":  # a bare cache name: the folder under the salt cache it names
        try:
            folder = resolve_cache(arg)
        except FileNotFoundError:
            return spec  # the teacher says what is missing
        confined_tree(folder, roots)
    return spec


def read_checked(path: Path, what: str, read):
    """``read(path)`` of a confined file; a file that is not a ``what`` is an
    :class:`UnreadableInput` naming it, never quoting it."""
    import pickle

    from salt.io import UnreadableFileError

    try:
        return read(path)
    except (UnreadableFileError, UnicodeDecodeError, pickle.UnpicklingError, ValueError):
        raise UnreadableInput(
            f"{display_name(path)} is not a readable {what}; it is damaged, truncated or "
            f"another kind of file"
        ) from None


def display_name(path: Path) -> str:
    """A file as the page names it: its folder and name (``checkpoints/step_4.pt``)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


# ---------------------------------------------------------------------------------------
# Clips


@attrs.frozen
class Clip:
    """A clip ``uint8 [T, H, W, 3]`` and the index its masks are keyed by."""

    frames: np.ndarray
    index: int
    label: str


def load_clip(
    source: str,
    num_frames: int,
    image_size: int,
    frame_step: int,
    roots: list[Path],
) -> Clip:
    """A built-in clip (``synthetic/N`` or ``motion/N``: clip N of the built-in data, as a
    cache names its views) or the centre view of a video file."""
    from salt.config import DataConfig
    from salt.data import build_source, builtin_clip

    data = DataConfig(num_frames=num_frames, frame_step=frame_step, image_size=image_size)
    built = builtin_clip(source)
    if built is not None:
        kind, index = built
        sample = build_source(attrs.evolve(data, spec=f"{kind}:{index + 1}"))[index]
        return Clip(sample.video.permute(0, 2, 3, 1).numpy(), index, f"{kind}/{index}")
    if not str(source).strip():
        raise ValueError("pick a clip: 'synthetic/N' for a built-in clip, or a video file path")
    if str(source).strip().startswith(("synthetic:", "motion:")):
        raise ValueError(
            f"{source!r} is a data spec (a number of clips); a built-in clip is 'synthetic/N'"
        )
    from salt.video import read_centre_view

    path = confined(source, roots)
    _, clip = read_centre_view(path, path.name, data)  # [T, C, H, W]
    return Clip(clip.permute(0, 2, 3, 1).numpy(), 0, path.name)


# ---------------------------------------------------------------------------------------
# Masks


@attrs.frozen
class MaskResult:
    """One image per mask group (captioned), the share table and a message for the page."""

    images: list[tuple[np.ndarray, str]] = attrs.field(factory=list)
    table: list[list[Any]] = attrs.field(factory=list)
    message: str = ""
    # Boolean context masks ``[G, T', H', W']``, for tests and for the latents tab.
    context: np.ndarray | None = None


SHARE_HEADERS = ["group", "time slice", "context share", "target share"]


def parse_options(text: str) -> dict:
    """Masker options from JSON text (empty means none)."""
    if not str(text or "").strip():
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f'masker options must be a JSON object, e.g. {{"ratio": 0.75}}: {err}'
        ) from None
    if not isinstance(options, dict):
        raise ValueError(f"masker options must be a JSON object, got {options!r}")
    return options


def make_masks(masker_spec: str, options: dict, grid: tuple[int, int, int], index: int, seed: int):
    """The masker's groups for one clip: ``(group names, context [G, T', H', W'] bool)``."""
    from salt.masking import sample_keys
    from salt.registry import maskers

    masker = maskers.create(masker_spec, grid=grid, **options)
    groups = masker(sample_keys(int(seed), 0, index))
    n = math.prod(grid)
    context = np.zeros((len(groups), n), dtype=bool)
    for g, group in enumerate(groups):
        context[g, group.context[0].numpy()] = True
    names = tuple(masker.group_names) or tuple(f"group{g}" for g in range(len(groups)))
    return names, context.reshape(len(groups), *grid)


def overlay(frame: np.ndarray, context: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """``frame [H, W, 3]`` with target tokens tinted ``colour``; context tokens stay as they are."""
    h, w = frame.shape[:2]
    gh, gw = context.shape
    cell = np.repeat(np.repeat(~context, h // gh, axis=0), w // gw, axis=1)  # [H, W] target
    out = frame.astype(np.float32)
    out[cell] = 0.45 * out[cell] + 0.55 * np.asarray(colour, dtype=np.float32)
    out[:: h // gh] = out[:: h // gh] * 0.7  # token grid lines
    out[:, :: w // gw] = out[:, :: w // gw] * 0.7
    return out.clip(0, 255).astype(np.uint8)


def strip(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images of one height side by side with a white gap."""
    h = images[0].shape[0]
    parts = []
    for i, img in enumerate(images):
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(img)
    return np.concatenate(parts, axis=1)


def render_masks(
    source: str,
    masker: str,
    options: str = "",
    seed: int = 0,
    num_frames: int = 8,
    image_size: int = 112,
    patch_size: int = 16,
    tubelet_size: int = 2,
    frame_step: int = 4,
    roots: list[Path] | None = None,
) -> MaskResult:
    """Each time slice of a clip with the masker's target tokens tinted, one image per group."""
    try:
        num_frames, image_size = int(num_frames), int(image_size)
        if num_frames % tubelet_size or image_size % patch_size:
            raise ValueError(
                f"{num_frames} frames of {image_size}px do not tile into {tubelet_size}-frame, "
                f"{patch_size}px tubelets; pick multiples"
            )
        grid = (num_frames // tubelet_size, image_size // patch_size, image_size // patch_size)
        clip = load_clip(source, num_frames, image_size, frame_step, roots or allowed_roots())
        names, context = make_masks(masker, parse_options(options), grid, clip.index, seed)
    except Exception as err:  # noqa: BLE001 - the page shows the reason instead of a trace
        return MaskResult(message=error_message(err))
    images, table = [], []
    for g, name in enumerate(names):
        colour = PALETTE[g % len(PALETTE)]
        slices = [
            overlay(clip.frames[t * tubelet_size], context[g, t], colour) for t in range(grid[0])
        ]
        share = context[g].reshape(grid[0], -1).mean(axis=1)
        images.append(
            (
                strip(slices),
                f"{clip.label} · {name}: context {context[g].mean():.0%} (tinted: target)",
            )
        )
        table += [
            [name, t, round(float(s), 4), round(1 - float(s), 4)] for t, s in enumerate(share)
        ]
    return MaskResult(images, table, "", context)


# ---------------------------------------------------------------------------------------
# Latents


@attrs.frozen
class LoadedRun:
    """A checkpoint's student + predictor and the teacher they are compared with."""

    checkpoint: Path
    step: int
    cfg: Any  # salt.config.Config
    model: Any  # salt.models.SaltModel, eval mode
    teacher: Any  # salt.teachers.Teacher
    cached: bool = False  # the teacher's latents are stored: it computes none for a new clip


def load_run(
    run: str | Path,
    teacher_spec: str = "",
    roots: list[Path] | None = None,
    allow_hub: bool = False,
) -> LoadedRun:
    """Load a run's newest checkpoint (or the given one) with the run's or another teacher;
    a teacher on the Hugging Face Hub only with ``allow_hub``."""
    import torch

    from salt.assemble import assemble
    from salt.checkpoints import load_checkpoint, resolve_checkpoint
    from salt.config import apply_overrides, from_dict

    roots = roots or allowed_roots()
    if not str(run).strip():
        raise ValueError("pick a run directory or a checkpoint file")
    path = confined(resolve_checkpoint(confined(run, roots)), roots)
    state = read_checked(path, "salt training checkpoint", load_checkpoint)
    cfg = from_dict(state["config"])
    if teacher_spec.strip() and teacher_spec.strip() != cfg.teacher.spec:
        cfg = apply_overrides(cfg, {"teacher.spec": teacher_spec.strip()})
    # The field's spec, or the one the checkpoint records: either may name a folder.
    check_teacher_spec(cfg.teacher.spec, roots, allow_hub)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        run = assemble(cfg, state=state)
    return LoadedRun(path, int(state["step"]), cfg, run.model, run.teacher, run.data.cached)


@attrs.frozen
class LatentResult:
    """Per group, one image (rows: time slices; columns: frame, teacher, prediction, error)."""

    images: list[tuple[np.ndarray, str]] = attrs.field(factory=list)
    table: list[list[Any]] = attrs.field(factory=list)
    message: str = ""
    loss: float | None = None


LOSS_HEADERS = ["term", "value"]


def pca_basis(latents: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and the top-``k`` principal directions ``[D, k]`` of ``latents [N, D]``."""
    mean = latents.mean(axis=0)
    _, _, vt = np.linalg.svd(latents - mean, full_matrices=False)
    basis = np.zeros((latents.shape[1], k), dtype=np.float64)
    basis[:, : min(k, vt.shape[0])] = vt[:k].T
    return mean, basis


def to_rgb(projected: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """PCA coordinates ``[..., 3]`` -> ``uint8`` colours, scaled by the teacher's range."""
    scaled = (projected - lo) / np.maximum(hi - lo, 1e-12)
    return (scaled.clip(0, 1) * 255).astype(np.uint8)


def heat(values: np.ndarray, top: float) -> np.ndarray:
    """Errors ``[...]`` -> black-red-yellow ``uint8 [..., 3]`` (``top`` maps to yellow)."""
    x = (values / max(top, 1e-12)).clip(0, 1)
    rgb = np.stack([np.minimum(1, 2 * x), np.maximum(0, 2 * x - 1), np.zeros_like(x)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def _tokens_image(grid_values: np.ndarray, size: int) -> np.ndarray:
    """``[H', W', 3]`` token colours -> ``[size, size, 3]`` blocks."""
    scale = max(1, size // grid_values.shape[0])
    return np.repeat(np.repeat(grid_values, scale, axis=0), scale, axis=1)


def render_latents(
    loaded: LoadedRun | None,
    source: str,
    seed: int = 0,
    roots: list[Path] | None = None,
) -> LatentResult:
    """Teacher latents, the predictor's reconstruction at the masked tokens (same PCA basis)
    and the per-token error for one clip and its mask, with the clip's loss."""
    try:
        if loaded is None:
            raise ValueError("load a run first")
        return _render_latents(loaded, source, int(seed), roots or allowed_roots())
    except Exception as err:  # noqa: BLE001 - the page shows the reason instead of a trace
        return LatentResult(message=error_message(err))


def _render_latents(loaded: LoadedRun, source: str, seed: int, roots: list[Path]) -> LatentResult:
    import torch

    from salt.data import normalize_clips
    from salt.losses import Objective, masked_loss
    from salt.masking import sample_keys
    from salt.models import masker_of

    cfg = loaded.cfg
    d = cfg.data
    clip = load_clip(source, d.num_frames, d.image_size, d.frame_step, roots)
    masker = masker_of(cfg)
    masks = masker(sample_keys(seed, 0, clip.index))
    names = tuple(getattr(masker, "group_names", ())) or tuple(
        f"group{i}" for i in range(len(masks))
    )
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)[None]  # [1, T, C, H, W]
    with torch.inference_mode():
        x = normalize_clips(video, d.mean, d.std)
        if loaded.cached:
            raise ValueError(
                f"the run's teacher {cfg.teacher.spec!r} is a cache, which holds latents only for "
                f"its own clips; give a live teacher (e.g. the one the cache was built with) in "
                f"the teacher field"
            )
        targets = loaded.teacher(x).float()
        preds = loaded.model(x, masks)
        loss, terms = masked_loss(preds, targets, masks, Objective(cfg.loss.name, cfg.loss.options))
    teacher = targets[0].numpy().astype(np.float64)  # [N, Dt]
    mean, basis = pca_basis(teacher)
    proj_t = (teacher - mean) @ basis
    lo, hi = np.percentile(proj_t, 2, axis=0), np.percentile(proj_t, 98, axis=0)
    t_len, gh, gw = cfg.grid
    size = max(gh * TOKEN_PX, 96)
    teacher_rgb = to_rgb(proj_t, lo, hi).reshape(t_len, gh, gw, 3)
    images, table = [], [["loss", round(float(loss), 6)]]
    table += [[name, round(float(v), 6)] for name, v in terms.items()]
    for g, (group, pred) in enumerate(zip(masks, preds, strict=True)):
        target_idx = group.target[0].numpy()
        recon = teacher.copy()
        recon[target_idx] = pred[0].numpy()
        recon_rgb = to_rgb((recon - mean) @ basis, lo, hi).reshape(t_len, gh, gw, 3)
        error = np.zeros(teacher.shape[0])
        error[target_idx] = ((recon[target_idx] - teacher[target_idx]) ** 2).mean(axis=1)
        group_loss = float(error[target_idx].mean())
        error_rgb = heat(error, float(error.max())).reshape(t_len, gh, gw, 3)
        rows = []
        for t in range(t_len):
            frame = clip.frames[t * (d.num_frames // t_len)]
            frame = np.asarray(
                torch.nn.functional.interpolate(
                    torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(size, size)
                )[0]
                .permute(1, 2, 0)
                .clamp(0, 255)
                .to(torch.uint8)
            )
            cells = [frame] + [
                _tokens_image(a[t], size) for a in (teacher_rgb, recon_rgb, error_rgb)
            ]
            rows.append(strip([c[:size, :size] for c in cells]))
        gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
        image = np.concatenate([r for row in rows for r in (row, gap)][:-1], axis=0)
        name = names[g] if g < len(names) else f"group{g}"
        images.append(
            (
                image,
                f"{name}: frame | teacher PCA | prediction at masked tokens | error "
                f"(MSE {group_loss:.4f}, max {error.max():.4f})",
            )
        )
        table.append([f"{name} masked-token MSE", round(group_loss, 6)])
    return LatentResult(images, table, "", float(loss))


# ---------------------------------------------------------------------------------------
# Runs


def list_runs(runs: str | Path) -> list[str]:
    """Run directories (holding ``metrics.jsonl``) under ``runs``, newest first."""
    root = Path(runs)
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/metrics.jsonl")]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


@attrs.frozen
class CurvesResult:
    """The loss/lr plot, one summary row per run and a message for the page."""

    image: np.ndarray | None = None
    table: list[list[Any]] = attrs.field(factory=list)
    message: str = ""
    series: dict = attrs.field(factory=dict)  # {run: {key: [(step, value)]}}: the image's
    metrics: dict = attrs.field(factory=dict)  # {run: {key: [(step, value)]}}: every number

    @property
    def keys(self) -> list[str]:
        """Every metric some run logged: loss and its terms, lr first (the interactive
        plot's choices)."""
        from salt.plots import panel_order

        return panel_order(self.metrics)


RUN_HEADERS = [
    "run",
    "steps logged",
    "min loss",
    "at step",
    "last loss",
    "best held-out loss",
    "best step",
    "rebound",
    "late rebound",
]


def plot_runs(
    runs: list[str],
    roots: list[Path] | None = None,
    smooth: float = 0.0,
    log_loss: bool = False,
) -> CurvesResult:
    """Loss terms and lr of the chosen runs, minimum and rebound marked, drawn as
    ``salt plot`` draws them (``smooth``: EMA weight, ``log_loss``: log-scale losses)."""
    from salt.metrics import CURVE_KEYS, read_records, read_series, summarize
    from salt.plots import check_smoothing, draw_runs_overlaid, to_image

    roots = roots or allowed_roots()
    if not runs:
        return CurvesResult(message="pick one or more runs")
    try:
        smooth = check_smoothing(smooth)
    except ValueError as err:
        return CurvesResult(message=error_message(err))
    series, metrics, table, problems = {}, {}, [], []
    for run in runs:
        try:
            path = confined(run, roots)
            if not (path / "metrics.jsonl").is_file():
                raise FileNotFoundError(
                    f"{str(run)!r} has no metrics.jsonl; is it a run directory?"
                )
            metrics_file = confined(path / "metrics.jsonl", roots)
            records = read_checked(
                metrics_file, "metrics log (one JSON object a line)", read_records
            )
            curves = read_series(records, keys=CURVE_KEYS)
            everything = read_series(records)
            if not curves.get("loss"):
                raise ValueError(f"run {path.name!r} has logged no finite loss yet")
        except Exception as err:  # noqa: BLE001
            problems.append(error_message(err))
            continue
        name = path.name
        series[name] = curves
        metrics[name] = everything
        s = summarize(records)
        table.append(
            [
                name,
                s["steps_logged"],
                round(s["min_loss"], 6),
                s["min_loss_step"],
                round(s["last_loss"], 6),
                round(s["min_val_loss"], 6) if "min_val_loss" in s else "-",
                s.get("min_val_step", "-"),
                f"{s['rebound']:+.1%}" + (" (held-out)" if s["rebound_on"] == "val_loss" else ""),
                "yes" if s["late_rebound"] else "no",
            ]
        )
    if not series:
        return CurvesResult(message="; ".join(problems))
    image = to_image(draw_runs_overlaid(series, smooth=smooth, log_loss=log_loss))
    return CurvesResult(image, table, "; ".join(problems), series, metrics)


def metric_frame(metrics: dict, key: str):
    """One metric of every run as a long table (``step``, ``value``, ``run``): what the
    interactive line plot draws, one coloured line per run."""
    import pandas as pd

    rows = [
        {"step": step, "value": value, "run": run}
        for run, curves in metrics.items()
        for step, value in curves.get(key, [])
    ]
    return pd.DataFrame(rows, columns=["step", "value", "run"])


# ---------------------------------------------------------------------------------------


def error_message(err: Exception) -> str:
    """A sentence for the page: the library's own error text, prefixed by what failed. A
    file that could not be parsed is named with what is wrong, never with what it holds
    (parsers quote the bytes they stopped at)."""
    import pickle

    from salt.errors import message_of
    from salt.io import UnreadableFileError
    from salt.video import VideoDecodeError

    text = message_of(err)
    if isinstance(err, VideoDecodeError):
        return f"Not a readable video: {text}"
    if isinstance(err, PathRefused):
        return f"Refused: {text}"
    if isinstance(err, UnreadableInput):
        return f"Unreadable file: {text}"
    if isinstance(err, UnreadableFileError):  # "<file> is not ... (<what the parser saw>); ..."
        return f"Unreadable file: {without_details(text)}"
    if isinstance(err, UnicodeDecodeError):  # its text quotes the byte it stopped at
        return "Unreadable file: a text file holds bytes that are not UTF-8"
    if isinstance(err, pickle.UnpicklingError):
        return "Unreadable file: a weights file holds more than tensors"
    log.debug("viewer callback failed", exc_info=err)
    return f"Error: {text}" if text else f"Error: {type(err).__name__}"


def without_details(text: str) -> str:
    """``text`` less its parenthesised asides, where salt's read errors put the parser's
    words (and the bytes it stopped at)."""
    while True:
        shorter = re.sub(r" ?\([^()]*\)", "", text)
        if shorter == text:
            return text
        text = shorter
