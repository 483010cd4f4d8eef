"""Training triplets from real footage (clips and frame folders) and photos with synthetic motion.

Everything is sampled on the fly from decoded uint8 frames held in memory: random crops,
random shrink (sharper content and larger motion, closer to Vimeo-90K's statistics), flips,
temporal reversal. Triplets that straddle a hard cut are never drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .scenecut import DEFAULT_THRESHOLD, scene_score
from .video_io import IMAGE_EXTS, VIDEO_EXTS, read_frames


@dataclass
class Clip:
    name: str
    frames: np.ndarray        # [T, H, W, 3] uint8
    valid: np.ndarray         # start indices k with (k, k+1, k+2) inside one shot


def _valid_starts(frames: np.ndarray, threshold: float) -> np.ndarray:
    small = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in frames]
    cut = [scene_score(small[i], small[i + 1]) > threshold for i in range(len(frames) - 1)]
    return np.array([k for k in range(len(frames) - 2) if not (cut[k] or cut[k + 1])], dtype=np.int64)


def load_clips(roots: list[str | Path], max_frames: int = 300, threshold: float = DEFAULT_THRESHOLD,
               exclude: tuple[str, ...] = ()) -> list[Clip]:
    """Every video file and every folder of images under `roots` becomes one clip, except the
    held-out ones named in `exclude`."""
    clips = []
    for root in map(Path, roots):
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            if p.name in exclude:
                continue
            is_video = p.is_file() and p.suffix.lower() in VIDEO_EXTS
            is_seq = p.is_dir() and sum(1 for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS) >= 3
            if not (is_video or is_seq):
                continue
            frames = []
            for i, f in enumerate(read_frames(p).frames):
                if i >= max_frames:
                    break
                frames.append(f)
            frames = np.stack(frames)
            valid = _valid_starts(frames, threshold)
            if len(valid):
                clips.append(Clip(p.name, frames, valid))
    return clips


def load_photos(root: str | Path, max_side: int = 1280) -> list[np.ndarray]:
    photos = []
    for p in sorted(Path(root).rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            s = max_side / max(img.shape[:2])
            if s < 1:
                img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            photos.append(np.ascontiguousarray(img[..., ::-1]))
    return photos


class TripletSampler:
    """Draws batches of high-res triplets [B, 3(time), 3, crop, crop] as float tensors in 0..1."""

    def __init__(self, clips: list[Clip], photos: list[np.ndarray] | None = None, crop: int = 128,
                 photo_fraction: float = 0.2, max_shrink: float = 2.0, seed: int = 0, gaps: tuple = (1,)):
        self.clips, self.photos = clips, photos or []
        self.crop, self.photo_fraction, self.max_shrink = crop, photo_fraction, max_shrink
        self.gaps = tuple(gaps)  # frame gaps: (k, k+g, k+2g) triplets; wider gaps, larger motion
        self._valid = [set(c.valid.tolist()) for c in clips]
        self.rng = np.random.default_rng(seed)
        self.weights = np.array([len(c.valid) for c in clips], dtype=np.float64)
        self.weights = np.sqrt(self.weights) / np.sqrt(self.weights).sum()  # long clips don't dominate

    def _from_clip(self) -> np.ndarray:
        r = self.rng
        ci = r.choice(len(self.clips), p=self.weights)
        clip, g = self.clips[ci], int(r.choice(self.gaps))
        # (k, k+g, k+2g) within one shot: every triplet start k, k+2, ..., k+2g-2 is valid
        starts = [k for k in clip.valid if all(k + j in self._valid[ci] for j in range(0, 2 * g - 1, 2))]
        if not starts:
            g, starts = 1, clip.valid
        k = int(r.choice(starts))
        frames = clip.frames[k:k + 2 * g + 1:g]
        h, w = frames.shape[1:3]
        shrink = float(np.exp(r.uniform(0, math.log(self.max_shrink))))
        size = min(int(self.crop * shrink), h, w)
        y, x = r.integers(0, h - size + 1), r.integers(0, w - size + 1)
        out = frames[:, y:y + size, x:x + size]
        if size != self.crop:
            out = np.stack([cv2.resize(f, (self.crop, self.crop), interpolation=cv2.INTER_AREA) for f in out])
        return out

    def _from_photo(self) -> np.ndarray:
        """A crop window moving along a smooth path with a little zoom and rotation."""
        r = self.rng
        img = self.photos[r.integers(len(self.photos))]
        h, w = img.shape[:2]
        c = self.crop
        shift = r.normal(0, 6, size=2) * int(r.choice(self.gaps))
        rot, zoom = r.normal(0, 1.5), float(np.exp(r.normal(0, 0.03)))
        cx, cy = r.uniform(c, w - c), r.uniform(c, h - c)
        out = []
        for i in (-1, 0, 1):
            m = cv2.getRotationMatrix2D((cx, cy), rot * i, zoom ** i)
            m[:, 2] += shift * i + np.array([c / 2 - cx, c / 2 - cy])
            out.append(cv2.warpAffine(img, m, (c, c), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT))
        return np.stack(out)

    def batch(self, n: int) -> torch.Tensor:
        items = []
        for _ in range(n):
            use_photo = self.photos and self.rng.random() < self.photo_fraction
            t = self._from_photo() if use_photo else self._from_clip()
            if self.rng.random() < 0.5:
                t = t[:, :, ::-1]
            if self.rng.random() < 0.5:
                t = t[:, ::-1]
            if self.rng.random() < 0.5:
                t = t[::-1]
            items.append(np.ascontiguousarray(t))
        x = torch.from_numpy(np.stack(items)).float().div_(255)
        return x.permute(0, 1, 4, 2, 3).contiguous()
