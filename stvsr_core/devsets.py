"""Large-motion development sets, built from footage that no model is trained on.

The shipped dev set has small motion (adjacent Vimeo-90K frames) and overstated the gains
measured on held-out video with larger motion. Two sets with 3-4x the motion:

- `vimeo_wide`: frames 1, 4 and 7 of each Vimeo-90K septuplet of the dev set (its `_13`,
  `_35` and `_57` folders hold frames 1-3, 3-5 and 5-7 of one clip): predict frame 4 from 1 and 7.
- `vimeo_times`: the same septuplets at other times: frames 1 and 5 in, 2, 3 and 4 predicted
  at t = 1/4, 1/2 and 3/4 (and likewise 3 and 7 in, 4, 5, 6 predicted), where the frames in
  between are real; `stvsr eval` scores it per t (evaluate.TIMES_FILE).
- `cockatoo_wide`: triplets (k, k+2, k+4) of `cockatoo.mp4` (20 fps, close-up, strong motion)
  at half size (640x360), a clip that the stage-2 training of `stvsr-quality` holds out.
- `vimeo_real` and `vimeo_wide_real`: `vimeo_septuplet` and `vimeo_wide` without the clips whose
  motion is one global translation (`is_global_shift`). Half of the dev set's septuplets are a
  still image shifted by 4-10 px a frame, its uncovered border smeared: classical flow is
  exact on them and RIFE is not, so they flatter DIS-based models against held-out real video.

Built into a folder of `im1..im3.png` triplets that `stvsr eval` reads like any other set; the
frames are derived from `../shared/data` and must never be committed.
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .evaluate import TIMES_FILE
from .video_io import read_frames

HELD_OUT_CLIPS = ("cockatoo.mp4",)  # never in stvsr-quality's training data


def septuplets(folder: Path) -> dict[str, list[Path]]:
    """{clip: paths of its frames 1..7} from the dev set's `_13`, `_35`, `_57` folders."""
    clips = defaultdict(dict)
    for d in sorted(Path(folder).iterdir()):
        stem, _, part = d.name.rpartition("_")
        if d.is_dir() and part in ("13", "35", "57"):
            clips[stem][part] = d
    return {stem: [p["13"] / "im1.png", p["13"] / "im2.png", p["13"] / "im3.png", p["35"] / "im2.png",
                   p["57"] / "im1.png", p["57"] / "im2.png", p["57"] / "im3.png"]
            for stem, p in sorted(clips.items()) if len(p) == 3}


def is_global_shift(first: Path, last: Path, spread: float = 1.2, shift: float = 3.0) -> bool:
    """True when DIS's flow from `first` to `last` is one translation: every vector within
    `spread` px (std, per axis) of a mean over `shift` px. Real footage (parallax, moving
    people) spreads far more; the dev set's synthetic shifts measure 0.1-1.0 px."""
    a, b = (cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2GRAY) for p in (first, last))
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None).reshape(-1, 2)
    return bool(flow.std(0).max() < spread and np.linalg.norm(flow.mean(0)) > shift)


def real_motion(septuplet_folder: Path) -> dict[str, list[Path]]:
    """The septuplets whose first three frames are not one global translation."""
    return {stem: frames for stem, frames in septuplets(septuplet_folder).items()
            if not is_global_shift(frames[0], frames[2])}


def vimeo_real(septuplet_folder: Path, out: Path, only: set[str] | None = None) -> int:
    """The dev set's `_13`, `_35`, `_57` triplets of its real-motion septuplets (or of `only`),
    copied as they are."""
    n = 0
    for stem in sorted(only if only is not None else real_motion(septuplet_folder)):
        for part in ("13", "35", "57"):
            dst = out / f"{stem}_{part}"
            dst.mkdir(parents=True, exist_ok=True)
            for name in ("im1", "im2", "im3"):
                shutil.copyfile(Path(septuplet_folder) / f"{stem}_{part}" / f"{name}.png", dst / f"{name}.png")
            n += 1
    return n


def vimeo_wide(septuplet_folder: Path, out: Path, only: set[str] | None = None) -> int:
    n = 0
    for stem, frames in septuplets(septuplet_folder).items():
        if only is not None and stem not in only:
            continue
        dst = out / stem
        dst.mkdir(parents=True, exist_ok=True)
        for name, src in (("im1", frames[0]), ("im2", frames[3]), ("im3", frames[6])):
            Image.open(src).save(dst / f"{name}.png")
        n += 1
    return n


def vimeo_times(septuplet_folder: Path, out: Path) -> int:
    """Folders `<clip>_15` (frames 1-5) and `<clip>_37` (frames 3-7) as im1..im5: im1 and im5
    in, im2, im3, im4 the truth at t = 1/4, 1/2, 3/4. Returns the number of folders."""
    n = 0
    for stem, frames in septuplets(septuplet_folder).items():
        for first in (1, 3):
            dst = out / f"{stem}_{first}{first + 4}"
            dst.mkdir(parents=True, exist_ok=True)
            for j in range(5):
                Image.open(frames[first - 1 + j]).save(dst / f"im{j + 1}.png")
            n += 1
    spec = {"inputs": ["im1.png", "im5.png"], "targets": [[f"im{j + 2}.png", (j + 1) / 4] for j in range(3)]}
    (out / TIMES_FILE).write_text(json.dumps(spec))
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
    """The sets under `out` from the shared data folder; returns their folders."""
    data, out = Path(data), Path(out)
    sets = []
    n = vimeo_wide(data / "eval" / "vimeo_septuplet", out / "vimeo_wide")
    log(f"vimeo_wide: {n} triplets (frames 1, 4, 7)")
    sets.append(out / "vimeo_wide")
    real = set(real_motion(data / "eval" / "vimeo_septuplet"))
    n = vimeo_real(data / "eval" / "vimeo_septuplet", out / "vimeo_real", only=real)
    log(f"vimeo_real: {n} triplets of the {len(real)} septuplets with real motion (not one global shift)")
    sets.append(out / "vimeo_real")
    n = vimeo_wide(data / "eval" / "vimeo_septuplet", out / "vimeo_wide_real", only=real)
    log(f"vimeo_wide_real: {n} triplets (frames 1, 4, 7 of the same)")
    sets.append(out / "vimeo_wide_real")
    n = vimeo_times(data / "eval" / "vimeo_septuplet", out / "vimeo_times")
    log(f"vimeo_times: {n} quintuplets (frames 1-5 and 3-7: t = 1/4, 1/2, 3/4)")
    sets.append(out / "vimeo_times")
    clip = data / "train" / "video" / "cockatoo.mp4"
    if clip.is_file():
        n = clip_wide(clip, out / "cockatoo_wide")
        log(f"cockatoo_wide: {n} triplets (frames k, k+2, k+4 at 640 px wide)")
        sets.append(out / "cockatoo_wide")
    return sets
