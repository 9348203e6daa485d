"""Write the built-in synthetic clips as real video files, in the three layouts salt reads.

No videos at hand, or want to check a data pipeline before pointing it at a real dataset?

    python examples/make_videos.py videos

writes, under ``videos/``:

- ``clips/<direction>/<n>.mp4`` - a folder of class folders (the folder name is the label);
- ``manifest.csv`` - a ``path,label`` manifest of the same files;
- ``ssv2/train.json``, ``ssv2/validation.json`` (``--val-videos`` more videos, other
  content), ``ssv2/labels.json`` and ``ssv2/20bn-something-something-v2/<id>.webm`` - the
  Something-Something-v2 layout.

Each data spec works with ``salt train --data``, ``salt cache build --data``,
``salt eval probes --data`` and (labelled) ``salt eval classify``. Needs PyAV (``pip install av``; part of the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import av
import numpy as np

from salt.synthetic import DIRECTIONS, SyntheticMotion

# mp4 for the folder/CSV layouts, webm for SSv2 (as the real dataset ships); the second codec
# is a fallback for FFmpeg builds without the first.
CODECS = {".mp4": ("libx264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}
# SVT-AV1 starts dozens of threads per encoder, which these tiny videos do not need and which
# can deadlock on a busy machine: one level of parallelism.
ENCODER_OPTIONS = {"libsvtav1": {"svtav1-params": "lp=1"}}


def write_video(
    path: Path, frames: np.ndarray, fps: int, codecs: tuple[str, ...] = (), gop: int = 0
) -> None:
    """Encode ``uint8 [T, H, W, 3]`` frames to ``path`` with the first of ``codecs`` this
    FFmpeg has (default: by the suffix), a keyframe every ``gop`` frames (0: the codec's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for codec in codecs or CODECS[path.suffix]:
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream(
                    codec, rate=fps, options=ENCODER_OPTIONS.get(codec, {})
                )
                stream.height, stream.width = frames.shape[1:3]
                stream.pix_fmt = "yuv420p"
                if gop:
                    stream.codec_context.gop_size = gop
                for frame in frames:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode())
            tmp.replace(path)  # a video is either complete or absent
            return
        except Exception as err:  # noqa: BLE001 - try the next codec this FFmpeg has
            tmp.unlink(missing_ok=True)
            errors.append(f"{codec}: {err}")
    raise RuntimeError(f"no codec could write {path}: {'; '.join(errors)}")


def ssv2_video(out: Path, video_id: str, frames: np.ndarray, direction: str, fps: int) -> dict:
    """Write one SSv2-layout video; its entry for train.json / validation.json."""
    write_video(out / "ssv2" / "20bn-something-something-v2" / f"{video_id}.webm", frames, fps)
    template = f"Moving [something] {direction}"
    return {
        "id": video_id,
        "label": template.replace("[", "").replace("]", ""),
        "template": template,
        "placeholders": ["shape"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--videos", type=int, default=24, help="videos per layout")
    parser.add_argument("--frames", type=int, default=64, help="frames per video")
    parser.add_argument("--size", type=int, default=128, help="frame height and width (pixels)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="the synthetic content seed")
    parser.add_argument(
        "--val-videos", type=int, default=8, help="SSv2 validation videos (other content)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    data = SyntheticMotion(length=args.videos, image_size=args.size, seed=args.seed)
    # One source frame per video frame: the shapes move at their natural speed.
    frame_numbers = np.arange(args.frames)
    rows, items = [], []
    for i in range(args.videos):
        frames = data.render(i, frame_numbers)
        direction = DIRECTIONS[data.params(i)["direction"]]
        clip = Path("clips") / direction / f"{i:04d}.mp4"
        write_video(out / clip, frames, args.fps)
        rows.append((str(clip), direction))
        items.append(ssv2_video(out, str(100000 + i), frames, direction, args.fps))
    held_out = SyntheticMotion(length=args.val_videos, image_size=args.size, seed=args.seed + 1)
    validation = [
        ssv2_video(
            out,
            str(200000 + i),
            held_out.render(i, frame_numbers),
            DIRECTIONS[held_out.params(i)["direction"]],
            args.fps,
        )
        for i in range(args.val_videos)
    ]
    with open(out / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    (out / "ssv2" / "train.json").write_text(json.dumps(items, indent=1))
    (out / "ssv2" / "validation.json").write_text(json.dumps(validation, indent=1))
    labels = {f"Moving something {d}": str(k) for k, d in enumerate(DIRECTIONS)}
    (out / "ssv2" / "labels.json").write_text(json.dumps(labels, indent=1))
    print(
        f"wrote {args.videos} videos per layout ({args.frames} frames, {args.size}px) under {out}:\n"
        f"  folder:   {out / 'clips'}\n"
        f"  manifest: {out / 'manifest.csv'}\n"
        f"  ssv2:     {out / 'ssv2' / 'train.json'}"
    )


if __name__ == "__main__":
    main()
