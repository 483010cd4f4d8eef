"""Large-motion development sets, built from footage that no model is trained on.

The shipped dev set has small motion (adjacent Vimeo-90K frames) and overstated the gains
measured on held-out video with larger motion. Two sets with 3-4x the motion:

- `vimeo_wide`: frames 1, 4 and 7 of each Vimeo-90K septuplet of the dev set (its `_13`,
  `_35` and `_57` folders hold frames 1-3, 3-5 and 5-7 of one clip): predict frame 4 from 1 and 7.
- `cockatoo_wide`: triplets (k, k+2, k+4) of `cockatoo.mp4` (20 fps, close-up, strong motion)
  at half size (640x360), a clip that the stage-2 training of `stvsr-quality` holds out.

Built into a folder of `im1..im3.png` triplets that `stvsr eval` reads like any other set; the
frames are derived from `../shared/data` and must never be committed.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .video_io import read_frames

HELD_OUT_CLIPS = ("cockatoo.mp4",)  # never in stvsr-quality's training data


def vimeo_wide(septuplets: Path, out: Path) -> int:
    clips = defaultdict(dict)
    for d in sorted(Path(septuplets).iterdir()):
        stem, _, part = d.name.rpartition("_")
        if d.is_dir() and part in ("13", "35", "57"):
            clips[stem][part] = d
    n = 0
    for stem, parts in sorted(clips.items()):
        if len(parts) < 3:
            continue
        dst = out / stem
        dst.mkdir(parents=True, exist_ok=True)
        for name, src in (("im1", parts["13"] / "im1.png"), ("im2", parts["35"] / "im2.png"),
                          ("im3", parts["57"] / "im3.png")):
            Image.open(src).save(dst / f"{name}.png")
        n += 1
    return n


def clip_wide(video: Path, out: Path, gap: int = 2, count: int = 10, width: int = 640) -> int:
    """`count` triplets (k, k+gap, k+2*gap) spread over the clip, resized to `width`."""
    frames = list(read_frames(video).frames)
    starts = np.linspace(0, len(frames) - 2 * gap - 1, count).round().astype(int)
    for i, k in enumerate(starts):
        dst = out / f"{i:03d}"
        dst.mkdir(parents=True, exist_ok=True)
        for j in range(3):
            f = frames[k + j * gap]
            h = round(f.shape[0] * width / f.shape[1] / 2) * 2
            Image.fromarray(cv2.resize(f, (width, h), interpolation=cv2.INTER_AREA)).save(dst / f"im{j + 1}.png")
    return len(starts)


def build(data: Path, out: Path, log=print) -> list[Path]:
    """Both sets under `out` from the shared data folder; returns their folders."""
    data, out = Path(data), Path(out)
    sets = []
    n = vimeo_wide(data / "eval" / "vimeo_septuplet", out / "vimeo_wide")
    log(f"vimeo_wide: {n} triplets (frames 1, 4, 7)")
    sets.append(out / "vimeo_wide")
    clip = data / "train" / "video" / "cockatoo.mp4"
    if clip.is_file():
        n = clip_wide(clip, out / "cockatoo_wide")
        log(f"cockatoo_wide: {n} triplets (frames k, k+2, k+4 at 640 px wide)")
        sets.append(out / "cockatoo_wide")
    return sets
