"""The GPU path in one table: run on a CUDA machine, paste the table into benchmarks/README.md.

    python benchmarks/gpu_bench.py            # a GPU: vit_l 16x224 bf16, ~3-5 minutes
    python benchmarks/gpu_bench.py --smoke    # any machine: tiny sizes, seconds (CI runs it)

Rows:

- the trainer's step (``salt.step.train_step``: SaltModel over both multi-block groups,
  masked MSE against cached-style targets, backward, clipping, fused AdamW) for a vit_l
  student and a 12 x 512 predictor at 16x224, batch 24, bf16 autocast - eager, and compiled
  (``torch.compile`` with fixed mask lengths: one graph): clips/s, TFLOP/s from the analytic
  FLOPs and MFU against the GPU's dense bf16 peak, plus the compile time;
- memory: the ``--dry-run`` memory plan against ``torch.cuda.max_memory_allocated``;
- cached-latent reads: random single-sample reads of [1568, 1280] fp16 and int8 latents on
  one core (GB/s of stored bytes);
- decoding: 16-frame 224px training clips per second on one core from 360p H.264 files,
  through salt's reader (the default decoder).

Nothing here is asserted except that each part ran and its numbers are finite; the numbers
go in the README, never into a test.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import types
from pathlib import Path

import attrs
import numpy as np
import torch

from salt.batch import Batch
from salt.config import build_config
from salt.distributed import DistInfo
from salt.losses import Objective
from salt.masking import sample_keys
from salt.memory import GIB, plan_memory
from salt.models import SaltModel, masker_of, predictor_of, student_of
from salt.optim import apply_schedules, build_optimizer
from salt.perf import measure_peak_tflops
from salt.step import StepParts, train_step


@attrs.frozen
class Size:
    student: str
    num_frames: int
    image_size: int
    batch: int
    teacher_dim: int
    predictor: tuple[int, int, int]  # width, depth, heads
    steps: int
    latent_shape: tuple[int, int]
    cache_samples: int
    decode_clips: int
    video: tuple[int, int, int]  # frames, height, width of the decoded test videos


FULL = Size("vit_l", 16, 224, 24, 1280, (512, 12, 8), 10, (1568, 1280), 64, 24, (96, 360, 640))
SMOKE = Size("vit_tiny", 4, 32, 2, 64, (32, 1, 2), 2, (8, 64), 8, 2, (72, 48, 64))


def config(size: Size, device: torch.device):
    width, depth, heads = size.predictor
    return build_config(
        overrides={
            "student.name": size.student,
            "teacher.spec": "pixels",  # only the geometry matters: targets are random
            "data.num_frames": size.num_frames,
            "data.image_size": size.image_size,
            "predictor.width": width,
            "predictor.depth": depth,
            "predictor.heads": heads,
            "train.batch_size": size.batch,
            "train.precision": "bf16" if device.type == "cuda" else "fp32",
            "train.device": device.type,
            "mask.lengths": "fixed",
        }
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rows(size: Size, device: torch.device, peak: float) -> list[tuple[str, str]]:
    cfg = config(size, device)
    torch.manual_seed(0)
    student = student_of(cfg)
    model = SaltModel(student, predictor_of(cfg, student.embed_dim, size.teacher_dim)).to(device)
    masker = masker_of(cfg)
    optimizer = build_optimizer(model, cfg.optim, fused=device.type == "cuda")
    apply_schedules(optimizer, cfg.optim.lr, cfg.optim.weight_decay)
    shape = (size.batch, size.num_frames, 3, size.image_size, size.image_size)
    video = torch.randint(0, 256, shape, dtype=torch.uint8)
    targets = torch.randn(size.batch, cfg.geometry.num_tokens, size.teacher_dim).half()

    def batches():
        for b in range(10**9):
            keys = sample_keys(0, 0, np.arange(b * size.batch, (b + 1) * size.batch))
            yield Batch(
                video=video,
                epochs=torch.zeros(size.batch, dtype=torch.int64),
                indices=torch.arange(size.batch),
                labels=torch.full((size.batch,), -1),
                views=[None] * size.batch,
                targets=targets,
                masks=masker(keys),
            ).to(device)

    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for name, net in (("eager", model), ("compiled", None)):
        if net is None:
            t0 = time.perf_counter()
            # --smoke only checks the compiled path captures: dynamo without code generation.
            backend = "eager" if size is SMOKE else "inductor"
            net = torch.compile(model, dynamic=False, backend=backend)
        parts = StepParts(
            model=model,
            net=net,
            teacher=None,
            objective=Objective("mse"),
            optimizer=optimizer,
            device=device,
            info=DistInfo(),
            mean=cfg.data.mean,
            std=cfg.data.std,
            params=tuple(p for p in model.parameters() if p.requires_grad),
            grad_clip=cfg.optim.grad_clip,
            bf16=device.type == "cuda",
        )
        stream = batches()
        try:
            if name == "compiled":
                train_step(parts, stream)  # compiles
                synchronize(device)
                compile_s = time.perf_counter() - t0
            else:
                train_step(parts, stream)  # warm-up: kernels, optimizer state
            synchronize(device)
            flops, t0 = 0.0, time.perf_counter()
            for _ in range(size.steps):
                result = train_step(parts, stream)
                flops += result.flops
            synchronize(device)
        except Exception as err:  # a compiler missing on this machine: say so, go on
            rows.append((f"step, {name}", f"failed: {str(err).splitlines()[0][:120]}"))
            continue
        seconds = (time.perf_counter() - t0) / size.steps
        assert math.isfinite(float(result.loss))
        tflops = flops / size.steps / seconds / 1e12
        text = (
            f"{size.batch / seconds:.1f} clips/s, {seconds * 1e3:.0f} ms/step, "
            f"{tflops:.3g} TFLOP/s, MFU {100 * tflops / peak:.1f}% of {peak:.3g}"
        )
        if name == "compiled":
            text += f"; compile {compile_s:.0f} s"
        rows.append(
            (
                f"step, {name} ({size.student} {size.num_frames}x{size.image_size}, "
                f"batch {size.batch})",
                text,
            )
        )
        if name == "eager":
            rows.append(memory_row(cfg, size, masker, device))
    return rows


def memory_row(cfg, size: Size, masker, device: torch.device) -> tuple[str, str]:
    masks = masker(sample_keys(0, 0, np.arange(cfg.train.batch_size)))
    with torch.device("meta"):
        student = student_of(cfg)
        shadow = SaltModel(student, predictor_of(cfg, student.embed_dim, size.teacher_dim))
    cached = types.SimpleNamespace(teacher_dim=size.teacher_dim)  # latents come with the batch
    plan = plan_memory(cfg, shadow, masks, cached, cached=True)
    planned = plan.total()
    if device.type != "cuda":
        return ("memory, planned", f"{planned / GIB:.2f} GiB (measured on a GPU only)")
    measured = torch.cuda.max_memory_allocated(device)
    return (
        "memory, planned vs measured",
        f"{planned / GIB:.2f} GiB planned, {measured / GIB:.2f} GiB peak allocated "
        f"(measured/planned {measured / planned:.2f})",
    )


def cache_rows(size: Size, folder: Path) -> list[tuple[str, str]]:
    from salt.cache import LatentCache, encode_latents, new_index, write_shard

    rows = []
    for dtype in ("float16", "int8"):
        root = folder / dtype
        root.mkdir()
        for shard in range(2):
            latents = torch.randn(size.cache_samples // 2, *size.latent_shape)
            tensors, error = encode_latents(latents, dtype)
            samples = [{"view": None, "label": -1}] * (size.cache_samples // 2)
            write_shard(root, shard, "train", tensors, samples, [], error)
        index = new_index(
            {
                "latent_shape": list(size.latent_shape),
                "dtype": dtype,
                "teacher_dim": size.latent_shape[1],
            }
        )
        index.splits["train"] = {
            "data_kind": "bench",
            "total": size.cache_samples,
            "complete": True,
        }
        index.write(root)
        split = LatentCache(root).split("train")
        order = np.random.default_rng(0).permutation(size.cache_samples)
        for i in order:  # warm the page cache and open every memory map
            split.latents(int(i))
        nbytes, t0, reads = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < (2.0 if size is FULL else 0.2):
            got = split.latents(int(order[reads % len(order)]))
            tensors = got.tensors().values() if hasattr(got, "tensors") else [got]
            nbytes += sum(t.clone().numel() * t.element_size() for t in tensors)
            reads += 1
        seconds = time.perf_counter() - t0
        rows.append(
            (
                f"cached latents {list(size.latent_shape)} {dtype}, 1 core",
                f"{nbytes / seconds / 1e9:.2f} GB/s, {reads / seconds:.0f} samples/s",
            )
        )
    return rows


def decode_rows(size: Size, folder: Path) -> list[tuple[str, str]]:
    import av

    from salt.config import build_config as build
    from salt.data import build_source

    frames, height, width = size.video
    videos = folder / "videos" / "any"
    videos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for v in range(4):
        with av.open(str(videos / f"v{v}.mp4"), mode="w") as container:
            stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            base = rng.integers(0, 255, (height, width + frames * 2, 3), np.uint8)
            for t in range(frames):
                frame = np.ascontiguousarray(base[:, 2 * t : 2 * t + width])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    cfg = build(
        overrides={
            "data.spec": str(folder / "videos"),
            "data.num_frames": 16,
            "data.image_size": min(224, height),
        }
    )
    source = build_source(cfg.data, "train")
    t0 = time.perf_counter()
    for i in range(size.decode_clips):
        sample = source.getitem(i % len(source), epoch=i // len(source))
        assert sample.error is None, sample.error
    seconds = time.perf_counter() - t0
    return [
        (
            f"decode {height}p H.264 -> 16x{cfg.data.image_size} clips ({cfg.data.decoder}), 1 core",
            f"{size.decode_clips / seconds:.1f} clips/s",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: any machine, seconds")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda"
    )
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type != "cuda" and not args.smoke:
        parser.error("no GPU here: run with --smoke (tiny sizes), or on a CUDA machine")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = measure_peak_tflops(device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = [
        (
            "device",
            f"{name}, torch {torch.__version__}, peak {peak:.1f} TFLOP/s "
            f"({'bf16' if device.type == 'cuda' else 'fp32'})",
        )
    ]
    rows += step_rows(size, device, peak)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reads and decoding: per core, as in one DataLoader worker
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows += cache_rows(size, Path(tmp))
            rows += decode_rows(size, Path(tmp))
    finally:
        torch.set_num_threads(threads)
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | result |")
    print(f"| {'-' * width} | --- |")
    for what, result in rows:
        print(f"| {what:<{width}} | {result} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
