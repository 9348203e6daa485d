"""A small VLA-style policy on a frozen SALT video encoder.

The policy is what robot VLA code builds around a video backbone: the frozen
``VideoEncoder``, a projector from its width to the policy's, and an action head. Here
the "actions" are the motion directions (8 classes) of the built-in synthetic clips, a
stand-in that needs temporal understanding, and the same policy is trained on a randomly
initialized encoder of the same architecture for comparison. The encoder is frozen, so
its features are computed once and only the projector and head train.

    python examples/vla_policy.py                          # trains a tiny encoder first
    python examples/vla_policy.py --encoder runs/x/encoder  # an exported encoder

Without ``--encoder`` a tiny encoder is trained at the demo scale (``salt train
--profile demo`` at 64px, pixel targets) and exported; the whole script takes about a
minute on a 2-core CPU. Expect both encoders near chance at that scale: a minute of
pretraining does not learn motion, and the small head overfits the random encoder's
features. The comparison means something for a real export passed with ``--encoder``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from salt import VideoEncoder
from salt.synthetic import DIRECTIONS, SyntheticMotion


class Policy(nn.Module):
    """Frozen video encoder -> projector -> action head over the encoder's time slices."""

    def __init__(self, encoder: VideoEncoder, time_slices: int, width: int, actions: int):
        super().__init__()
        self.encoder = encoder.freeze()
        self.projector = nn.Sequential(
            nn.LayerNorm(encoder.embed_dim),
            nn.Linear(encoder.embed_dim, width),
            nn.GELU(),
            nn.Linear(width, width),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(time_slices * width, width),
            nn.GELU(),
            nn.Linear(width, actions),
        )

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 video ``[B, T, C, H, W]`` -> per-time-slice encoder features ``[B, T', D]``."""
        return self.encoder.encode(video, pool="frames")

    def act(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features ``[B, T', D]`` -> action logits ``[B, actions]``."""
        return self.head(self.projector(features))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 video ``[B, T, C, H, W]`` -> action logits ``[B, actions]``."""
        return self.act(self.features(video))


def pretrain_encoder(args: argparse.Namespace, workdir: Path) -> Path:
    """Train a tiny encoder at the demo scale (stage 1: masked pixels) and export it."""
    from salt.config import build_config
    from salt.export import export_encoder
    from salt.train import train

    overrides = {
        "teacher.spec": "pixels",
        "data.spec": f"synthetic:{max(args.clips, 64)}",
        # The demo profile's 8 frames, at 64px rather than 112px to take well under a minute.
        "data.image_size": args.size or 64,
        "train.steps": args.steps,
        "train.device": args.device,
        "train.progress": False,
        "run.out": str(workdir / "runs"),
        "run.name": "encoder",
    }
    if args.frames:
        overrides["data.num_frames"] = args.frames
    cfg = build_config(profile="demo", overrides=overrides)
    print(
        f"training a tiny {cfg.student.name} encoder for {cfg.train.steps} steps on "
        f"{cfg.data.num_frames}x{cfg.data.image_size}px synthetic clips ..."
    )
    result = train(cfg)
    return export_encoder(result.run_dir, workdir / "encoder", force=True)


def clips(length: int, encoder: VideoEncoder, args: argparse.Namespace, seed: int):
    """Synthetic clips ``uint8 [N, T, C, H, W]`` and their motion directions ``[N]``."""
    data = SyntheticMotion(
        length=length,
        num_frames=args.frames or encoder.num_frames,
        image_size=args.size or encoder.image_size,
        frame_step=encoder.frame_step,
        seed=seed,
    )
    items = [data[i] for i in range(length)]
    return torch.stack([it["video"] for it in items]), torch.tensor([it["label"] for it in items])


@torch.inference_mode()
def precompute(policy: Policy, video: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The frozen encoder's features ``[N, T', D]``, once, so training touches only the head."""
    device = policy.encoder.device
    parts = [policy.features(chunk.to(device)) for chunk in video.split(batch_size)]
    return torch.cat(parts).float()


def fit_and_score(
    encoder: VideoEncoder, train_set, test_set, args: argparse.Namespace
) -> tuple[float, float]:
    """Train the projector and head on frozen features; (train, held-out) accuracy."""
    (train_video, train_labels), (test_video, test_labels) = train_set, test_set
    torch.manual_seed(args.seed)
    slices = (args.frames or encoder.num_frames) // encoder.tubelet_size
    policy = Policy(encoder, slices, args.width, len(DIRECTIONS)).to(encoder.device)
    t0 = time.perf_counter()
    train_feats = precompute(policy, train_video, args.batch_size)
    test_feats = precompute(policy, test_video, args.batch_size)
    t1 = time.perf_counter()
    heads = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(heads, lr=args.lr, weight_decay=0.05)
    device = train_feats.device
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    for _ in range(args.epochs):
        order = torch.randperm(len(train_feats), device=device)
        for idx in order.split(args.batch_size):
            loss = nn.functional.cross_entropy(policy.act(train_feats[idx]), train_labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    policy.eval()
    print(
        f"  features [T', D] = {tuple(train_feats.shape[1:])} in {t1 - t0:.0f}s, "
        f"projector + head trained in {time.perf_counter() - t1:.0f}s"
    )
    with torch.no_grad():
        train_acc = (policy.act(train_feats).argmax(-1) == train_labels).float().mean().item()
        test_acc = (policy.act(test_feats).argmax(-1) == test_labels).float().mean().item()
    return train_acc, test_acc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", help="an exported encoder (default: train a tiny one)")
    parser.add_argument("--steps", type=int, default=60, help="pretraining steps (no --encoder)")
    parser.add_argument("--clips", type=int, default=512, help="policy training clips")
    parser.add_argument("--test-clips", type=int, default=256, help="held-out clips")
    parser.add_argument(
        "--frames", type=int, default=0, help="frames per clip (default: the encoder's)"
    )
    parser.add_argument(
        "--size", type=int, default=0, help="clip side in px (default: the encoder's)"
    )
    parser.add_argument("--epochs", type=int, default=60, help="policy training epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=128, help="the policy's width")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workdir", help="where a pretrained encoder goes (default: temporary)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        if args.encoder:
            path, label = Path(args.encoder), f"trained ({args.encoder})"
        else:
            path, label = pretrain_encoder(args, Path(args.workdir or scratch)), "trained (demo)"
            keep = f"; reuse it with --encoder {path}" if args.workdir else ""
            print(f"exported the encoder to {path}{keep}")
        trained = VideoEncoder.from_pretrained(path, device=device)
        torch.manual_seed(args.seed)
        baseline = VideoEncoder.from_config(trained.config, device=device)

    t0 = time.perf_counter()
    train_set = clips(args.clips, trained, args, seed=0)
    test_set = clips(args.test_clips, trained, args, seed=1)  # other content: held out
    frames, size = train_set[0].shape[1], train_set[0].shape[-1]
    print(
        f"policy: frozen {trained.config['architecture']} (width {trained.embed_dim}) -> "
        f"projector -> action head; {args.clips} training and {args.test_clips} held-out "
        f"{frames}x{size}px clips ({time.perf_counter() - t0:.0f}s to render), "
        f"{len(DIRECTIONS)} motion directions"
    )
    rows = []
    for name, encoder in ((label, trained), ("random init, same architecture", baseline)):
        print(f"{name}:")
        rows.append((name, *fit_and_score(encoder, train_set, test_set, args)))
    name_width = max(len(r[0]) for r in rows)
    print(f"\n{'encoder':<{name_width}}  train acc  held-out acc")
    for name, train_acc, test_acc in rows:
        print(f"{name:<{name_width}}  {train_acc:9.3f}  {test_acc:12.3f}")
    print(f"{'chance':<{name_width}}  {1 / len(DIRECTIONS):9.3f}  {1 / len(DIRECTIONS):12.3f}")
    print(f"\ndone in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
