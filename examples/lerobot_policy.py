"""A LeRobot-style policy on a frozen SALT video encoder, trained on a LeRobot dataset.

LeRobot policies take a batch dict keyed by feature name - camera frames as
``observation.images.<camera>`` float ``[B, T, C, H, W]`` in [0, 1] (a short history of
frames), ``action`` ``[B, action_dim]`` - and offer ``forward(batch) -> (loss, info)`` for
training and ``select_action(batch)`` for control. This one puts the exported encoder
(``VideoEncoder.from_pretrained``, frozen) in front of a small action head:

    python examples/make_lerobot.py lerobot-demo
    salt train --data lerobot:lerobot-demo --steps 20 --run-name lerobot-demo
    salt export runs/lerobot-demo --out encoders/lerobot-demo
    python examples/lerobot_policy.py lerobot-demo encoders/lerobot-demo

Observation histories are read with salt's own LeRobot reader (``lerobot:PATH:CAMERA``):
frames by timestamp, never across an episode. The actions come from the dataset's frame
table (``data/...parquet``; each episode's mean action), so it needs ``pyarrow``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from salt import VideoEncoder
from salt.config import DataConfig
from salt.data import VideoDataset
from salt.lerobot import read_dataset
from salt.video import discover


class SaltVideoPolicy(nn.Module):
    """Frozen ``VideoEncoder`` over a camera's frame history -> MLP -> action."""

    def __init__(self, encoder: VideoEncoder, camera: str, action_dim: int, width: int = 128):
        super().__init__()
        self.encoder = encoder.freeze()
        self.camera = camera
        self.head = nn.Sequential(
            nn.LayerNorm(encoder.embed_dim),
            nn.Linear(encoder.embed_dim, width),
            nn.GELU(),
            nn.Linear(width, action_dim),
        )

    def features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():  # the encoder is frozen: no graph through it
            return self.encoder.encode(batch[self.camera], pool="mean")

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The behaviour-cloning loss on ``batch["action"]``, LeRobot's training call."""
        loss = nn.functional.mse_loss(self.head(self.features(batch)), batch["action"])
        return loss, {"mse": loss.item()}

    @torch.no_grad()
    def select_action(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(batch))


def episode_actions(root: Path) -> dict[int, torch.Tensor]:
    """Each episode's mean ``action`` from the dataset's frame table(s)."""
    import pyarrow.parquet as pq

    tables = sorted(root.glob("data/**/*.parquet"))
    if not tables:
        raise SystemExit(f"{root} has no frame tables (data/**/*.parquet): no actions to learn")
    rows = [r for f in tables for r in pq.read_table(f).to_pylist()]
    by_episode: dict[int, list] = {}
    for row in rows:
        by_episode.setdefault(int(row["episode_index"]), []).append(row["action"])
    return {e: torch.tensor(a, dtype=torch.float32).mean(0) for e, a in by_episode.items()}


def batches(root: Path, camera: str, encoder: VideoEncoder, epochs: int):
    """LeRobot-style batches: one frame history per episode per epoch, with its action."""
    data = DataConfig(
        spec=f"lerobot:{root}:{camera}",
        num_frames=encoder.num_frames,
        frame_step=encoder.frame_step,
        image_size=encoder.image_size,
    )
    dataset = VideoDataset(discover(data.spec), data, train=True)
    episodes = [r["episode"] for r in read_dataset(root, camera)[0]]
    actions = episode_actions(root)
    missing = sorted(set(episodes) - set(actions))
    if missing:
        raise SystemExit(f"{root}: episodes {missing[:5]} have videos but no rows in data/")
    for epoch in range(epochs):
        samples = [dataset.getitem(i, epoch) for i in range(len(dataset))]
        video = torch.stack([s.video for s in samples]).float() / 255  # [B, T, C, H, W]
        yield {camera: video, "action": torch.stack([actions[e] for e in episodes])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a LeRobotDataset folder")
    parser.add_argument("encoder", type=Path, help="an exported encoder (salt export)")
    parser.add_argument("--camera", default="observation.images.top")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    encoder = VideoEncoder.from_pretrained(args.encoder)
    torch.manual_seed(0)
    policy = SaltVideoPolicy(encoder, args.camera, action_dim=2)
    optimizer = torch.optim.AdamW(policy.head.parameters(), lr=3e-3)
    for epoch, batch in enumerate(batches(args.dataset, args.camera, encoder, args.epochs)):
        loss, info = policy(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if epoch in (0, args.epochs - 1):
            print(f"epoch {epoch + 1}: behaviour-cloning mse {info['mse']:.4f}")
    action = policy.select_action({args.camera: batch[args.camera][:1]})
    print(f"select_action on one history: {[round(v, 3) for v in action[0].tolist()]}")


if __name__ == "__main__":
    main()
