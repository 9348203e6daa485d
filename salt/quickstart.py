"""The whole SALT story on built-in data, on CPU, in one call.

Pixel teacher -> export -> latent cache -> student from the cache -> held-out distillation
loss -> temporal probes and frozen classification on the motion benchmark (student,
teacher, random) -> student export reloaded with ``VideoEncoder.from_pretrained``.
Everything is written under one folder; the result holds the paths, the numbers and each
stage's wall time. ``salt quickstart`` prints it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import torch

from salt.config import (
    BUILT_IN,
    DEMO_PROFILE,
    MOTION_BENCHMARKS,
    STUDENT_CHECKPOINTS,
    TARGET_NORMS,
    Config,
    DataConfig,
    build_config,
)
from salt.eval.classify import ClassifyReport, ClassifySettings, ProbeScore
from salt.eval.distill import DistillReport
from salt.eval.report import format_rows
from salt.eval.stats import gap_in_stderr
from salt.eval.temporal import ProbeReport, clip_settings
from salt.folders import (
    EMPTY,
    EXPORT,
    EXPORT_FILES,
    QUICKSTART,
    RUN,
    FolderRefused,
    WriterLock,
    claim,
    describe,
    entries,
    folder_kind,
)
from salt.metrics import read_series
from salt.plots import draw_losses_per_run, save_png
from salt.progress import progress_bar

log = logging.getLogger(__name__)

STAGES = ("teacher", "cache", "student", "distill", "probes", "classify", "export")
MODELS = ("student", "teacher", "random")
# SALT's claim: student > teacher > random on the motion benchmark, each by this many
# standard errors of the difference.
CLAIM_STDERRS = 3.0
TRAIN_DATA = BUILT_IN
BENCHMARKS = MOTION_BENCHMARKS  # the classify stage's labelled data
# What a quickstart writes directly under its folder; --force removes only these.
OUTPUTS = ("runs", "encoders", "cache", "loss_curves.png", "quickstart.json", "summary.txt")


# A quick start's warmups are steps, as given, up to this share of the run - not the 10% that
# optim.max_warmup_fraction allows a profile's warmup: the instance-target student needs ~1000
# steps under the peak rate to leave its plateau, and the recipe's 1200 cut to 900 (10% of a
# 9000-step run) left it there until step ~2300 (docs/results.md, "2026-12-06 (night)").
MAX_WARMUP_FRACTION = 0.5


@attrs.frozen
class QuickstartSettings:
    """How big each stage is. The defaults are the smallest budget that shows student >=
    teacher > random on the motion benchmark (docs/quickstart.md's budget curve): ~34 minutes
    on 2 idle CPU cores, the teacher's 4000 and the student's 6000 steps (~0.15 s each) most
    of it; LONG adds the student steps that reach SALT's claim, DEMO is the pipeline at 8x112
    in ~8.5 minutes, too short to show the ordering."""

    # Unlabelled training data for both runs: the motion benchmark's training clips (the
    # classify stage's own domain), it with photo textures, or the built-in synthetic world.
    data: str = attrs.field(default="motion", validator=attrs.validators.in_(TRAIN_DATA))
    device: str = "cpu"  # both runs, the cache, the distillation loss and the classify probes
    teacher_steps: int = attrs.field(default=4000, validator=attrs.validators.gt(0))
    student_steps: int = attrs.field(default=6000, validator=attrs.validators.gt(0))
    clips: int = attrs.field(default=2048, validator=attrs.validators.gt(0))  # training clips
    batch_size: int = attrs.field(default=8, validator=attrs.validators.gt(0))
    num_frames: int = attrs.field(default=8, validator=attrs.validators.gt(0))
    image_size: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    # Both runs' masker (``mask.name``): the last 2 of the 4 time slices predicted from the
    # first 2 (future:0.5), or e.g. V-JEPA's multiblock.
    mask: str = "future:0.5"
    # The student's targets (``loss.target_norm``): the teacher's latents as they are (none),
    # standardized per token (layer) or per channel over a clip (instance).
    target_norm: str = attrs.field(default="instance", validator=attrs.validators.in_(TARGET_NORMS))
    # Each run's linear warmup (``optim.warmup_steps``), as given up to half of its steps
    # (:data:`MAX_WARMUP_FRACTION`). Instance targets sit on a plateau for ~2400 steps after
    # a 10-step warmup (the demo profile's), and one 4000-step teacher seed in three ended
    # under the random encoder after one.
    teacher_warmup: int = attrs.field(default=400, validator=attrs.validators.ge(0))
    student_warmup: int = attrs.field(default=1200, validator=attrs.validators.ge(0))
    probe_videos: int = attrs.field(default=64, validator=attrs.validators.ge(4))
    # The motion benchmark (motion:N: N training clips, N/2 test) - or it with photo
    # textures, motion-natural - and its attentive probes.
    benchmark: str = attrs.field(default="motion", validator=attrs.validators.in_(BENCHMARKS))
    classify_clips: int = attrs.field(default=14336, validator=attrs.validators.ge(14))
    classify_seeds: int = attrs.field(default=3, validator=attrs.validators.ge(2))
    classify_epochs: int = attrs.field(default=40, validator=attrs.validators.gt(0))
    # Label only the first N training clips (low-shot; classes cycle, so N/14 per class);
    # 0: all of them. The test split stays classify_clips / 2.
    classify_max_train: int = attrs.field(default=448, validator=attrs.validators.ge(0))
    # ZCA-whiten each model's tokens before its probe (``salt eval classify --whiten``); off:
    # V-JEPA's protocol on raw tokens.
    classify_whiten: bool = True
    distill_batches: int = attrs.field(default=4, validator=attrs.validators.gt(0))
    # The student's held-out loss while it trains (``train.eval_every`` = steps / this, on
    # eval_batches batches of the cache's val split): the run keeps its lowest as
    # checkpoints/best.pt. 0: not measured.
    eval_points: int = attrs.field(default=18, validator=attrs.validators.ge(0))
    eval_batches: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    # Checkpoints the student keeps, evenly spaced (the last is always one of them).
    student_checkpoints: int = attrs.field(default=6, validator=attrs.validators.gt(0))
    # The student checkpoint the evaluation stages score and the export writes: the run's
    # best by held-out loss (picked without labels; the last when eval_points is 0) or its
    # last.
    student_checkpoint: str = attrs.field(
        default="best", validator=attrs.validators.in_(STUDENT_CHECKPOINTS)
    )
    workers: int = attrs.field(default=1, validator=attrs.validators.ge(0))  # DataLoader workers
    peak_tflops: float = 0.0  # 0 measures the CPU's matmul peak for the MFU column
    # Both runs, the random encoder, the held-out loss and the temporal probes' videos; the
    # motion benchmark and its probe seeds stay fixed, so seeds compare trainings.
    seed: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @property
    def train_spec(self) -> str:
        """Both runs' data spec (its held-out split scores the distillation loss)."""
        return f"{self.data}:{self.clips}"

    @property
    def classify_spec(self) -> str:
        """The classify stage's labelled data."""
        return f"{self.benchmark}:{self.classify_clips}"


# The pipeline at a demo size in ~8.5 minutes on 2 cores (two ~0.55 s/step runs of 300
# steps on the synthetic world at 8x112, a raw-token probe on motion:224): the outputs at a
# real frame size, too short for the ordering (docs/quickstart.md's budget curve).
DEMO = QuickstartSettings(
    data="synthetic",
    teacher_steps=300,
    student_steps=300,
    clips=512,
    image_size=112,
    mask="multiblock",
    target_norm="none",
    teacher_warmup=DEMO_PROFILE["optim.warmup_steps"],
    student_warmup=DEMO_PROFILE["optim.warmup_steps"],
    classify_clips=224,
    classify_epochs=20,
    classify_max_train=0,
    classify_whiten=False,
    eval_points=12,
    eval_batches=4,
    student_checkpoints=1,
)

# Seconds instead of minutes: for tests and a first look at the outputs.
FAST = attrs.evolve(
    DEMO,
    teacher_steps=6,
    student_steps=6,
    clips=24,
    batch_size=4,
    num_frames=4,
    image_size=64,
    probe_videos=8,
    classify_clips=28,
    classify_seeds=2,
    classify_epochs=2,
    distill_batches=1,
    eval_points=2,
    eval_batches=1,
    workers=0,
    peak_tflops=1.0,
)

# The recipe that reaches SALT's claim on 2 CPU cores (docs/results.md): the defaults with the
# student trained 9000 steps instead of 6000 - its last 3000 are the claim's margin. The
# held-out loss is measured every 500 steps and the lowest is the checkpoint scored and
# exported (student_checkpoint best: at the last step seed 3 missed by 0.2 s.e.).
LONG = QuickstartSettings(student_steps=9000)


@attrs.frozen
class QuickstartResult:
    """Where a quickstart wrote everything, what it measured and how long each stage took."""

    out: Path
    teacher_run: Path
    teacher_export: Path
    cache: Path
    student_run: Path
    student_export: Path
    plot: Path
    report: Path  # quickstart.json
    teacher_summary: dict
    student_summary: dict
    distill: DistillReport
    probes: dict[str, ProbeReport]  # model name -> report, in MODELS order
    classify: dict[str, ClassifyReport]  # model name -> motion benchmark report, MODELS order
    reload_max_diff: float  # reloaded export vs checkpoint student tokens, max |a - b|
    seconds: dict[str, float]  # stage -> wall seconds, in STAGES order
    target_norm: str = "none"  # the student's loss.target_norm (its loss's scale follows it)
    # The student checkpoint scored and exported (scored_description): which, step, path.
    student_checkpoint: dict = attrs.field(factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {
            "out": str(self.out),
            "paths": {
                "teacher_run": str(self.teacher_run),
                "teacher_export": str(self.teacher_export),
                "cache": str(self.cache),
                "student_run": str(self.student_run),
                "student_export": str(self.student_export),
                "plot": str(self.plot),
            },
            "teacher_summary": self.teacher_summary,
            "student_summary": self.student_summary,
            "target_norm": self.target_norm,
            "student_checkpoint": self.student_checkpoint,
            "distill": self.distill.to_dict(),
            "probes": {name: r.to_dict() for name, r in self.probes.items()},
            "classify": {name: r.to_dict() for name, r in self.classify.items()},
            "claim": self.claim(),
            "reload_max_diff": self.reload_max_diff,
            "seconds": self.seconds,
        }

    def table(self) -> str:
        """One table: losses, probe accuracies per model and wall time per stage."""
        t, s, d = self.teacher_summary, self.student_summary, self.distill
        rows: list[tuple[str, ...]] = [("losses", "min (step)", "last (step)")]
        student = "student (cached" + (
            f", {self.target_norm})" if self.target_norm != "none" else ")"
        )
        for name, summary in (("teacher (pixels)", t), (student, s)):
            rows.append(
                (
                    f"  {name}",
                    f"{summary['min_loss']:.4f} ({summary['min_loss_step']})",
                    f"{summary['last_loss']:.4f} ({summary['last_step']})",
                )
            )
        if s.get("best_step") is not None:
            rows.append(
                ("  student, held-out (best)", f"{s['best_val_loss']:.4f} ({s['best_step']})", "")
            )
        if self.student_checkpoint:
            c = self.student_checkpoint
            rows.append(("  student scored, exported", f"{c['which']} ({c['step']})", ""))
        rows.append(("  distill, held-out", f"{d.loss:.4f}", f"ratio {d.ratio:.3f}"))
        rows.append(("", "", ""))
        rows.append(("probes (accuracy)", *self.probes, "chance"))
        first = next(iter(self.probes.values()))
        for task in first.tasks:
            cells = [f"{r[task].accuracy:.3f}" for r in self.probes.values()]
            rows.append((f"  {task}", *cells, f"{first[task].chance:.3f}"))
        rows.append(("", "", ""))
        first = next(iter(self.classify.values()))
        rows.append((f"{first.data} (top-1)", *self.classify, "chance"))
        scores = [self._score(r) for r in self.classify.values()]
        cells = [f"{s.mean:.3f}+-{s.stderr:.3f}" for s in scores]
        probe = "attentive probe" + (", whitened" if first.whitened else "")
        rows.append((f"  {probe}", *cells, f"{first.chance:.3f}"))
        rows.append(("  clips labelled / tested", f"{first.train_clips} / {first.test_clips}"))
        claim = self.claim()
        for label, key in (
            ("student > teacher", "student_vs_teacher"),
            ("teacher > random", "teacher_vs_random"),
        ):
            rows.append((f"  {label}", f"{claim[key]:+.1f} s.e."))
        rows.append(("  student >= teacher > random", "shown" if claim["ordered"] else "not shown"))
        rows.append(
            ("  SALT's claim (>= 3 s.e. each)", "reached" if claim["reached"] else "not reached")
        )
        rows.append(("", "", ""))
        rows.append(("stage", "seconds"))
        for stage, seconds in self.seconds.items():
            rows.append((f"  {stage}", f"{seconds:.1f}"))
        rows.append(("  total", f"{sum(self.seconds.values()):.1f}"))
        return format_rows(rows)

    @staticmethod
    def _score(report: ClassifyReport) -> ProbeScore:
        return report.score("attentive")

    def claim(self) -> dict:
        """SALT's claim on the motion benchmark: student > teacher > random, each gap in
        standard errors of the difference, probe seeds and test clips both counted (>= 3
        each is the claim; see ``salt.eval.stats.gap_in_stderr``). ``ordered``: the
        ordering alone, student >= teacher > random in mean top-1."""
        s, t, r = (self._score(self.classify[name]) for name in MODELS)
        gaps = {"student_vs_teacher": gap_in_stderr(s, t), "teacher_vs_random": gap_in_stderr(t, r)}
        return {
            **gaps,
            "ordered": s.mean >= t.mean > r.mean,
            "reached": all(g >= CLAIM_STDERRS for g in gaps.values()),
        }


def check_out(out: Path, force: bool) -> list[Path]:
    """What ``--force`` replaces in ``out``: only the files a quickstart writes there. A
    file, or a folder holding anything but an earlier quickstart, is refused whatever
    ``force`` says; an earlier quickstart is refused without ``force``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} is a file; choose a folder")
    kind = folder_kind(out)
    if kind == EMPTY:
        return []
    if kind != QUICKSTART:
        raise FolderRefused(
            f"--out {str(out)!r} {describe(out, kind)}, not an earlier quickstart: --force "
            f"replaces only a quickstart's own files; choose another --out"
        )
    if not force:
        raise FileExistsError(
            f"--out {str(out)!r} holds an earlier quickstart; pass --force to replace its "
            f"files there, or choose another --out"
        )
    foreign = foreign_files(out)
    if foreign:
        raise FolderRefused(
            f"--out {str(out)!r} is an earlier quickstart holding files it did not write "
            f"({', '.join(foreign[:4])}{' ...' if len(foreign) > 4 else ''}): --force replaces "
            f"only a quickstart's own files; move those out, or choose another --out"
        )
    return [out / name for name in OUTPUTS if (out / name).exists() or (out / name).is_symlink()]


# Inside a quickstart's folders: what each holds (a run, an export, a cache), by name.
_OWN = {"runs": ("teacher", "student"), "encoders": ("teacher", "student")}
_CACHE_FILE = re.compile(r"cache\.json|shard_\d+\.(json|safetensors)")


def foreign_files(out: Path) -> list[str]:
    """Paths (relative to ``out``) inside a quickstart's ``runs/``, ``encoders/`` and
    ``cache/`` that a quickstart does not write - what ``--force`` must not remove."""
    found = []
    for folder, names in _OWN.items():
        base = out / folder
        if not base.is_dir() or base.is_symlink():
            continue
        for entry in entries(base):
            kind = folder_kind(entry) if entry.is_dir() and not entry.is_symlink() else None
            expected = RUN if folder == "runs" else EXPORT
            if entry.name not in names or kind not in (expected, EMPTY):
                found.append(f"{folder}/{entry.name}")
            elif folder == "encoders":
                found += [
                    f"{folder}/{entry.name}/{p.name}"
                    for p in entries(entry)
                    if p.name not in EXPORT_FILES
                ]
    cache = out / "cache"
    if cache.is_dir() and not cache.is_symlink():
        found += [f"cache/{p.name}" for p in entries(cache) if not _CACHE_FILE.fullmatch(p.name)]
    return found


def remove_outputs(paths: list[Path]) -> None:
    """Remove an earlier quickstart's outputs; a symlink goes, never what it points to."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def stage_config(
    settings: QuickstartSettings, out: Path, name: str, teacher: str, steps: int, progress: bool
) -> Config:
    """The demo profile (vit_tiny) sized by ``settings``, writing ``out/runs/name``."""
    return build_config(
        profile="demo",
        overrides={
            "data.spec": settings.train_spec,
            "data.num_workers": settings.workers,
            "data.num_frames": settings.num_frames,
            "data.image_size": settings.image_size,
            "mask.name": settings.mask,
            "teacher.spec": teacher,
            "train.steps": steps,
            "train.epochs": 0,
            "train.batch_size": settings.batch_size,
            "train.device": settings.device,
            "train.seed": settings.seed,
            # Only the student distils latents; the pixel teacher's loss has its own norm.
            "loss.target_norm": settings.target_norm if name == "student" else "none",
            "optim.warmup_steps": (
                settings.student_warmup if name == "student" else settings.teacher_warmup
            ),
            "optim.max_warmup_fraction": MAX_WARMUP_FRACTION,
            # ~50 points per loss curve
            "train.log_every": max(1, steps // 50),
            **checkpointing(settings, name, steps),
            "train.peak_tflops": settings.peak_tflops,
            "train.progress": progress,
            "run.out": str(out / "runs"),
            "run.name": name,
        },
    )


def checkpointing(settings: QuickstartSettings, name: str, steps: int) -> dict:
    """A run's checkpoints and held-out loss: the teacher keeps its last checkpoint; the
    student keeps ``student_checkpoints`` and measures its held-out loss ``eval_points``
    times (on the cache's val split), keeping the lowest as ``best``."""
    if name != "student":
        return {"train.checkpoint_every": steps, "train.keep_checkpoints": 1, "train.eval_every": 0}
    kept = min(settings.student_checkpoints, steps)
    points = min(settings.eval_points, steps)
    return {
        "train.checkpoint_every": steps // kept,
        "train.keep_checkpoints": kept,
        "train.eval_every": steps // points if points else 0,
        "train.eval_batches": settings.eval_batches,
    }


def student_checks(cfg: Config) -> str:
    """The student's held-out loss and kept checkpoints, as its plan says them."""
    t = cfg.train
    kept = f"keeps {t.keep_checkpoints} checkpoint(s), every {t.checkpoint_every} steps"
    if not t.eval_every:
        return f"held-out loss: off; {kept}"
    return (
        f"held-out loss every {t.eval_every} steps on {t.eval_batches * t.batch_size} clips of "
        f"the cache's val split (the lowest kept as best); {kept}"
    )


def scoring_plan(settings: QuickstartSettings) -> str:
    """Which student checkpoint the plan's evaluation stages will score."""
    if settings.student_checkpoint == "best" and settings.eval_points:
        return "the best checkpoint by held-out loss (student_checkpoint best)"
    return "the last checkpoint (student_checkpoint last)"


def run_quickstart(
    out: str | Path = "quickstart",
    settings: QuickstartSettings = QuickstartSettings(),
    force: bool = False,
    progress: bool = True,
    on_stage: Callable[[int, str], None] | None = None,
) -> QuickstartResult:
    """Run the six stages into ``out`` and return what they produced; ``out`` is new, empty
    or an earlier quickstart (replaced with ``force``), written by this process alone.

    ``progress`` shows the stages' tqdm bars; ``on_stage(number, description)`` is called as
    each stage starts (the CLI prints a header line with it).
    """
    from salt.data import shared_clips

    out = Path(out)
    check_out(out, force)
    claim(out, QUICKSTART, "--out")
    with WriterLock(out, QUICKSTART, "salt quickstart", hint=BUSY), shared_clips():
        remove_outputs(check_out(out, force))  # again, now that no other quickstart can start
        return _run_stages(out, settings, progress, on_stage)


BUSY = "wait for it to end (or stop it), or choose another --out"


def _run_stages(
    out: Path,
    settings: QuickstartSettings,
    progress: bool,
    on_stage: Callable[[int, str], None] | None,
) -> QuickstartResult:
    from salt.eval.distill import distill_loss
    from salt.export import export_encoder
    from salt.train import train

    seconds: dict[str, float] = {}
    descriptions = stage_descriptions(settings)

    def start(stage: str) -> float:
        number = STAGES.index(stage) + 1
        log.debug("stage %d/%d: %s", number, len(STAGES), descriptions[stage])
        if on_stage is not None:
            on_stage(number, descriptions[stage])
        return time.perf_counter()

    t0 = start("teacher")
    teacher_cfg = stage_config(settings, out, "teacher", "pixels", settings.teacher_steps, progress)
    render_clips(settings, teacher_cfg.data)
    teacher = _finished(train(teacher_cfg), "teacher")
    seconds["teacher"] = time.perf_counter() - t0

    t0 = start("cache")
    teacher_export = export_encoder(teacher.run_dir, out / "encoders" / "teacher")
    cache_dir = cache_latents(settings, out, teacher_export, progress)
    seconds["cache"] = time.perf_counter() - t0

    t0 = start("student")
    student_cfg = stage_config(
        settings, out, "student", f"cached:{cache_dir}", settings.student_steps, progress
    )
    student = _finished(train(student_cfg), "student")
    seconds["student"] = time.perf_counter() - t0
    scored = scored_checkpoint(student.run_dir, settings)

    t0 = start("distill")
    # The live teacher on the held-out split: clips neither run has seen.
    distill = distill_loss(
        scored,
        {
            "teacher.spec": f"encoder:{teacher_export}",
            "data.spec": settings.train_spec,
        },
        batches=settings.distill_batches,
        seed=settings.seed,
        device=settings.device,
    )
    seconds["distill"] = time.perf_counter() - t0

    t0 = start("probes")
    models = quickstart_models(scored, teacher_export, settings.seed)
    probes = run_probe_suite(models, settings, progress)
    seconds["probes"] = time.perf_counter() - t0

    t0 = start("classify")
    classified = run_classify(models, settings, progress)
    seconds["classify"] = time.perf_counter() - t0

    t0 = start("export")
    student_export, reload_max_diff = export_and_reload(student.run_dir, out, scored)
    seconds["export"] = time.perf_counter() - t0

    plot = loss_plot(teacher.run_dir, student.run_dir, out / "loss_curves.png")
    result = QuickstartResult(
        out=out,
        teacher_run=teacher.run_dir,
        teacher_export=teacher_export,
        cache=cache_dir,
        student_run=student.run_dir,
        student_export=student_export,
        plot=plot,
        report=out / "quickstart.json",
        teacher_summary=teacher.summary,
        student_summary=student.summary,
        distill=distill,
        probes=probes,
        classify=classified,
        reload_max_diff=reload_max_diff,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        target_norm=settings.target_norm,
        student_checkpoint=scored_description(scored),
    )
    result.report.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out / "summary.txt").write_text(result.table() + "\n")
    return result


def render_clips(settings: QuickstartSettings, data: DataConfig) -> None:
    """Render the clips both runs, the cache and the held-out checks read - the training
    clips and the val split's first - once, on every core, before the teacher trains: in
    :func:`~salt.data.shared_clips`, each stage then reads them instead of drawing them
    again in its loader worker, beside its training steps."""
    from salt.data import build_source, keep_rendered, render_workers

    held_out = max(settings.eval_batches, settings.distill_batches) * settings.batch_size
    workers = render_workers(settings.workers)
    for split, count in (("train", settings.clips), ("val", held_out)):
        clips = build_source(data, split)  # the built-in data: TRAIN_DATA
        keep_rendered(clips, range(min(count, len(clips))), workers)


def stage_descriptions(settings: QuickstartSettings) -> dict[str, str]:
    """What each stage does, as its header says it."""
    return {
        "teacher": f"train a pixel-reconstruction teacher ({settings.teacher_steps} steps)",
        "cache": "export the teacher and cache its latents",
        "student": f"train a student on the cached latents ({settings.student_steps} steps"
        + (f", {settings.target_norm}-standardized" if settings.target_norm != "none" else "")
        + ")",
        "distill": "held-out distillation loss of the student",
        "probes": "temporal probes: " + ", ".join(MODELS),
        "classify": f"motion benchmark ({settings.classify_spec}"
        + (f", {settings.classify_max_train} labelled" if settings.classify_max_train else "")
        + "), attentive probe: "
        + ", ".join(MODELS),
        "export": "export the student and reload it with VideoEncoder.from_pretrained",
    }


def cache_latents(settings: QuickstartSettings, out: Path, teacher: Path, progress: bool) -> Path:
    """The exported teacher's latents of the student's training clips, cached."""
    from salt.cache.build import build_cache
    from salt.models import teacher_of

    cache_dir = out / "cache"
    # Only its data and teacher are used: the same clips the student will train on.
    cache_cfg = stage_config(settings, out, "cache", f"encoder:{teacher}", 1, progress)
    teacher = teacher_of(cache_cfg)
    splits = {"train": cache_cfg}
    if settings.eval_points:
        # The student's held-out clips: the first of the val split, as many as it scores.
        clips = settings.eval_batches * settings.batch_size
        splits["val"] = attrs.evolve(
            cache_cfg, data=attrs.evolve(cache_cfg.data, spec=f"{settings.data}:{clips}")
        )
    for split, cfg in splits.items():
        build_cache(
            teacher,
            cfg,
            cache_dir,
            split=split,
            batch_size=settings.batch_size,
            workers=settings.workers,
            device=settings.device,
            progress=progress,
        )
    return cache_dir


def scored_checkpoint(run_dir: Path, settings: QuickstartSettings) -> Path:
    """The student checkpoint the evaluation stages score and the export writes: the run's
    best by held-out loss where ``student_checkpoint`` asks for it and the run kept one
    (``eval_points`` > 0), else its last."""
    from salt.checkpoints import best_path, resolve_checkpoint

    best = best_path(run_dir)
    if settings.student_checkpoint == "best" and settings.eval_points and best.is_file():
        return best
    return resolve_checkpoint(run_dir)


def scored_description(checkpoint: Path) -> dict:
    """Which student checkpoint was scored: its step, and whether it is the run's best (by
    held-out loss, with that loss) or its last."""
    from salt.checkpoints import BEST
    from salt.io import torch_load

    state = torch_load(checkpoint)
    chosen = {"step": int(state["step"]), "path": str(checkpoint)}
    if checkpoint.name == BEST:
        return {"which": "best", **chosen, "val_loss": float(state["val_loss"])}
    return {"which": "last", **chosen}


def export_and_reload(run_dir: Path, out: Path, checkpoint: Path) -> tuple[Path, float]:
    """The export of the run's ``checkpoint``, and how far its reloaded tokens are from the
    checkpoint's (an export that changes them is refused)."""
    from salt.encoder import VideoEncoder
    from salt.export import export_encoder

    student_export = export_encoder(run_dir, out / "encoders" / "student", checkpoint)
    reloaded = VideoEncoder.from_pretrained(student_export).freeze()
    original = VideoEncoder.from_pretrained(checkpoint).freeze()
    reload_max_diff = tokens_difference(reloaded, original)
    if reload_max_diff > 1e-6:
        raise RuntimeError(
            f"the exported student at {student_export} gives tokens up to {reload_max_diff:.3g} "
            f"away from its checkpoint's; the export is broken"
        )
    return student_export, reload_max_diff


def loss_plot(teacher_run: Path, student_run: Path, png: Path) -> Path:
    """Both runs' loss curves, side by side."""
    losses = {
        title: read_series(run_dir / "metrics.jsonl", keys=["loss"]).get("loss", [])
        for title, run_dir in (
            ("teacher (pixels)", teacher_run),
            ("student (cached teacher latents)", student_run),
        )
    }
    return save_png(draw_losses_per_run(losses), png)


def _finished(result, name: str):
    """A training run that ran to its last step (a SIGINT/SIGTERM stops the quickstart too)."""
    if result.stopped_by:
        raise RuntimeError(
            f"the {name} run was stopped by {result.stopped_by} at step {result.step}; "
            f"start the quickstart again with --force"
        )
    return result


def quickstart_models(
    student_run: Path, teacher_export: Path, seed: int
) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The student, the teacher and a random encoder of the student's shape, in MODELS
    order, each with its exported config (clip geometry, normalization)."""
    from salt.eval.baseline import random_like
    from salt.export import load_encoder

    student, config = load_encoder(student_run)
    teacher, teacher_config = load_encoder(teacher_export)
    random = random_like(student, architecture=config["architecture"], seed=seed)
    return {
        "student": (student, config),
        "teacher": (teacher, teacher_config),
        "random": (random, config),
    }


def run_probe_suite(
    models: dict[str, tuple[torch.nn.Module, dict]], settings: QuickstartSettings, progress: bool
) -> dict[str, ProbeReport]:
    """Temporal probe reports of each model."""
    from salt.eval.temporal import run_probes

    reports = {}
    for name, (model, config) in models.items():
        with progress_bar(f"probes ({name})", "task", progress, unit="clip") as advance:
            reports[name] = run_probes(
                model,
                "synthetic",
                num_videos=settings.probe_videos,
                seed=settings.seed,
                **clip_settings(config),
                progress=advance,
            )
    return reports


def run_classify(
    models: dict[str, tuple[torch.nn.Module, dict]], settings: QuickstartSettings, progress: bool
) -> dict[str, ClassifyReport]:
    """Each model's attentive-probe top-1 on the motion benchmark (``salt eval classify``),
    on one set of clips drawn once (every model has the run's clip geometry)."""
    from salt.eval.classify import classify, encoder_splits, share_clips

    chosen = classify_settings(settings)
    first = next(iter(models.values()))[1]
    splits = encoder_splits(first, settings.classify_spec, settings=chosen)
    scoring = share_clips(splits, chosen)
    reports = {}
    for name, (model, config) in models.items():
        with progress_bar(f"classify ({name})", "stage", progress) as advance:
            reports[name] = classify(
                model,
                splits,
                config["mean"],
                config["std"],
                scoring,
                name,
                settings.device,
                advance,
            )
    return reports


def classify_settings(settings: QuickstartSettings) -> ClassifySettings:
    """The classify stage's settings (``salt eval classify``'s)."""
    return ClassifySettings(
        probes=("attentive",),
        seeds=settings.classify_seeds,
        epochs=settings.classify_epochs,
        workers=min(settings.workers, 2),
        whiten=settings.classify_whiten,
        max_train=settings.classify_max_train,
    )


def plan_quickstart(
    out: str | Path, settings: QuickstartSettings, force: bool = False
) -> list[str]:
    """What ``salt quickstart --dry-run`` prints: each stage's size, after checking what
    can be checked before training - the folder, the runs' config, data and masker, and
    the classify stage's data - without training or writing anything."""
    from salt.eval.classify import encoder_splits, plan_lines
    from salt.export import build_encoder, encoder_config
    from salt.optim import warmup_steps
    from salt.train import dry_run

    out = Path(out)
    replaced = [path.name for path in check_out(out, force)]  # refuses; removes nothing
    teacher_cfg = stage_config(settings, out, "teacher", "pixels", settings.teacher_steps, False)
    teacher = dry_run(teacher_cfg)
    student_cfg = stage_config(
        settings, out, "student", f"cached:{out / 'cache'}", settings.student_steps, False
    )
    # The student trains on the same clips with the same masks and batch; its teacher is
    # the cache the first stages write, so only its length differs from the teacher's plan.
    config = encoder_config(teacher_cfg.to_dict())
    with torch.device("meta"):
        encoder = build_encoder(config).eval()
    chosen = classify_settings(settings)
    splits = encoder_splits(config, settings.classify_spec, settings=chosen)
    indent = lambda lines: [f"  {line}" for line in lines]  # noqa: E731
    return [
        f"quickstart into {out}/, device {teacher.device}"
        + (f" (--force replaces: {', '.join(replaced)})" if replaced else ""),
        "teacher (stage 1, pixel reconstruction):",
        *indent(teacher.lines()[1:]),
        f"student (stage 2): {settings.student_steps} steps on the teacher's cached latents of "
        f"the same {teacher.dataset_size} clips, masks {settings.mask}, "
        f"{teacher.global_batch} clips/step, targets {settings.target_norm} (loss.target_norm), "
        f"warmup {warmup_steps(student_cfg.optim, settings.student_steps)} (optim.warmup_steps)",
        "  " + student_checks(student_cfg),
        "  scored and exported: " + scoring_plan(settings),
        f"temporal probes: {settings.probe_videos} videos per task, for each of "
        + ", ".join(MODELS),
        f"classify (attentive probe{', whitened' if chosen.whiten else ''}), for each of "
        + ", ".join(MODELS)
        + ":",
        *indent(plan_lines(encoder, config, splits, chosen)[1:]),
    ]


def tokens_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Max |a(clip) - b(clip)| over two held-out synthetic clips at ``a``'s geometry."""
    from salt.synthetic import SyntheticMotion

    clips = SyntheticMotion(
        length=2, num_frames=a.num_frames, image_size=a.image_size, frame_step=a.frame_step, seed=1
    )
    video = torch.stack([clips[i]["video"] for i in range(2)])  # [B, T, C, H, W] uint8
    with torch.inference_mode():
        return float((a(video) - b(video)).abs().max())
