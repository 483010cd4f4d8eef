"""Distillation of a strong teacher's M_S into a compact student's (paper 002, space distillation).

The teacher (e.g. `stvsr-quality`, whose M_S is the pretrained SPAN x2) labels low-res crops
once, into safetensors blocks in the run folder (resumable, like stream_cache):
- labelled crops: a training frame downsampled as the protocol does (degrade.downsample), with
  its ground truth and the teacher's output on it;
- unlabelled crops: native-resolution frames of the training clips and the registry photos used
  as the low-res input as they are, where only the teacher can say what 2x looks like. This is
  the paper's "teacher on far more data than has ground truth", and the footage users feed.

Stage 1 then trains the student's M_S on L1 to the truth where there is one (weight 1) plus
L1 to the teacher everywhere (weight `TEACHER_WEIGHT`). The paper also matches intermediate
feature maps; SPAN and the student share no layer layout, so only outputs are matched here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .degrade import downsample

TEACHER_WEIGHT = 1.0  # L1 to the teacher's output, beside L1 to the truth (weight 1)
MARGIN = 8  # low-res pixels the teacher sees around each kept crop: no padding artefacts in labels


class DistillBatch(NamedTuple):
    L: torch.Tensor        # [B, 3, h, w] low-res input
    teacher: torch.Tensor  # [B, 3, s*h, s*w] the teacher's M_S on it
    target: torch.Tensor   # [B, 3, s*h, s*w] ground truth (zeros where there is none)
    labelled: torch.Tensor  # [B] bool: has a ground truth


def distill_loss(model, b: DistillBatch) -> tuple[torch.Tensor, dict]:
    """Stage 1's M_S terms: the truth where known, the teacher everywhere."""
    out = model.spatial(b.L)
    terms = {"M_S teacher": TEACHER_WEIGHT * F.l1_loss(out, b.teacher)}
    if bool(b.labelled.any()):
        terms["M_S"] = F.l1_loss(out[b.labelled], b.target[b.labelled])
    return sum(terms.values()), terms


def _native_crop(rng, clips, photos, size: int) -> np.ndarray:
    """A size x size crop of one native-resolution frame (a clip frame or a photo)."""
    use_photo = photos and rng.random() < 0.2
    if use_photo:
        img = photos[rng.integers(len(photos))]
    else:
        clip = clips[rng.integers(len(clips))]
        img = clip.frames[rng.integers(len(clip.frames))]
    h, w = img.shape[:2]
    y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return img[y:y + size, x:x + size]


def _teacher_on(teacher, L_big: torch.Tensor) -> torch.Tensor:
    """The teacher's M_S on crops with a margin, the margin cut off again."""
    s, m = teacher.scale, MARGIN
    with torch.inference_mode():
        out = teacher.spatial(L_big).float().clamp(0, 1)
    return out[..., s * m:-s * m, s * m:-s * m]


def build(teacher, sampler, clips, photos, folder: Path, samples: int, crop: int = 64,
          unlabelled: float = 0.5, block: int = 32, log=print) -> Path:
    """Fill folder/labels_XXXX.safetensors with `samples` crops (low-res side `crop`)."""
    folder.mkdir(parents=True, exist_ok=True)
    s, big = teacher.scale, crop + 2 * MARGIN
    t0, done = time.time(), 0
    for i in range(0, samples, block):
        path = folder / f"labels_{i // block:04d}.safetensors"
        n = min(block, samples - i)
        if path.is_file():
            done += n
            continue
        rng = np.random.default_rng(2_000_003 * (i // block + 1))  # a block is the same when resumed
        n_native = int(round(n * unlabelled))
        sampler.rng, sampler.crop = rng, s * big
        H = sampler.batch(n - n_native).frames[:, 1]  # real frames (clips, photos), in 0..1
        L_lab = downsample(H, s)
        native = [_native_crop(rng, clips, photos, big) for _ in range(n_native)]
        L_nat = torch.from_numpy(np.stack(native)).permute(0, 3, 1, 2).float() / 255 if native else L_lab[:0]
        L_big = torch.cat([L_lab, L_nat])
        T = _teacher_on(teacher, L_big)
        m = MARGIN
        target = torch.cat([H[..., s * m:-s * m, s * m:-s * m], torch.zeros_like(T[len(H):])])
        blocks = {"L": (L_big[..., m:-m, m:-m] * 255).round().to(torch.uint8),
                  "teacher": T.half(), "target": (target * 255).round().to(torch.uint8),
                  "labelled": torch.arange(n) < len(H)}
        tmp = path.with_suffix(".partial")
        save_file(blocks, str(tmp))
        tmp.rename(path)
        done += n
        log(f"teacher labels: {done}/{samples} crops ({(time.time() - t0) / max(1, done):.3f} s each)")
    return folder


class DistillSampler:
    """Random crops (low-res side crop // scale, `crop` being the high-res side as in StageSpec)
    of the cached labels, with flips, as DistillBatch float32 tensors."""

    def __init__(self, folder: Path, scale: int, crop: int = 96, seed: int = 0):
        blocks = [load_file(str(p)) for p in sorted(Path(folder).glob("labels_*.safetensors"))]
        if not blocks:
            raise FileNotFoundError(f"{folder}: no teacher labels")
        self.data = {k: torch.cat([b[k] for b in blocks]) for k in DistillBatch._fields}
        self.scale, self.crop = scale, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data["L"])

    def batch(self, n: int) -> DistillBatch:
        r, s = self.rng, self.scale
        c = min(self.crop // s, self.data["L"].shape[-1])
        size = self.data["L"].shape[-1]
        idx = r.integers(0, len(self), n)
        out = {k: [] for k in ("L", "teacher", "target")}
        for i in idx:
            y, x = r.integers(0, size - c + 1, 2)
            flip_h, flip_v = r.random() < 0.5, r.random() < 0.5
            for k in out:
                k_s = 1 if k == "L" else s
                v = self.data[k][i, :, k_s * y:k_s * (y + c), k_s * x:k_s * (x + c)].float()
                v = v / 255 if k != "teacher" else v
                v = v.flip(-1) if flip_h else v
                out[k].append(v.flip(-2) if flip_v else v)
        return DistillBatch(*(torch.stack(out[k]) for k in ("L", "teacher", "target")),
                            labelled=self.data["labelled"][torch.from_numpy(idx)])
