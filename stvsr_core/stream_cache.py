"""Stage 2 on frozen, expensive backbones: compute both streams once, then train F and R on them.

With pretrained M_S and M_T (SPAN, RIFE) frozen, H_st and H_ts of a training triplet never
change during stage 2, and computing them costs far more than a step of F and R. So they are
computed once per sample, through the same `DualStream.streams` that inference uses, on large
crops (RIFE needs context for large motion), and stored in safetensors blocks in the run folder
(resumable). Each training step then draws smaller random crops of cached samples.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .degrade import downsample


class StreamBatch(NamedTuple):
    H_st: torch.Tensor    # [B, 3, h, w]
    H_ts: torch.Tensor
    target: torch.Tensor  # the real in-between frame
    cue: torch.Tensor | None = None  # F's extra input, when its config asks for one (DualStream.cue)


def build(model, sampler, folder: Path, samples: int, block: int = 16, bf16: bool = False, log=print) -> Path:
    """Fill folder/streams_XXXX.safetensors with `samples` (H_st, H_ts, target) triplets."""
    from .train import stage2_streams  # the one composition of both streams (train imports this module)
    folder.mkdir(parents=True, exist_ok=True)
    s = model.scale
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t0, done = time.time(), 0
    for i in range(0, samples, block):
        path = folder / f"streams_{i // block:04d}.safetensors"
        n = min(block, samples - i)
        has = load_file(str(path)) if path.is_file() else None
        if has is not None and ("cue" in has or not model.needs_cue):
            done += n
            continue
        sampler.rng = np.random.default_rng(1_000_003 * (i // block + 1))  # a block is the same when resumed
        hr = sampler.batch(n)  # a TripletBatch: each sample's streams are made at its own t
        H0, Ht, H1 = hr.frames[:, 0], hr.frames[:, 1], hr.frames[:, 2]
        L0, L1 = downsample(H0, s), downsample(H1, s)
        if has is not None:  # streams cached by a run whose F took no cue: add the cue only
            blocks = dict(has)
        else:
            with torch.inference_mode(), cast:
                H_st, H_ts = stage2_streams(model, L0, L1, hr.t)
            blocks = {"H_st": H_st.float().clamp(0, 1).half(), "H_ts": H_ts.float().clamp(0, 1).half(),
                      "target": Ht.half()}
        cue = model.cue(L0, L1, hr.t)
        if cue is not None:
            blocks["cue"] = cue.half()
        tmp = path.with_suffix(".partial")
        save_file(blocks, str(tmp))
        tmp.rename(path)
        done += n
        rate = (time.time() - t0) / max(1, done)
        log(f"stream cache: {done}/{samples} samples ({rate:.2f} s each)")
    return folder


class StreamSampler:
    """Random crops of cached stream samples (with flips), as StreamBatch float32 tensors."""

    def __init__(self, folder: Path, crop: int = 128, seed: int = 0):
        blocks = [load_file(str(p)) for p in sorted(Path(folder).glob("streams_*.safetensors"))]
        if not blocks:
            raise FileNotFoundError(f"{folder}: no cached streams")
        self.fields = [k for k in StreamBatch._fields if all(k in b for b in blocks)]
        self.data = {k: torch.cat([b[k] for b in blocks]) for k in self.fields}
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.data["target"])

    def batch(self, n: int) -> StreamBatch:
        r, c = self.rng, self.crop
        size = self.data["target"].shape[-1]
        idx = r.integers(0, len(self), n)
        out = {k: [] for k in self.fields}
        for i in idx:
            y, x = r.integers(0, size - c + 1, 2)
            flip_h, flip_v = r.random() < 0.5, r.random() < 0.5
            for k in self.fields:
                v = self.data[k][i, :, y:y + c, x:x + c].float()
                v = v.flip(-1) if flip_h else v
                out[k].append(v.flip(-2) if flip_v else v)
        return StreamBatch(**{k: torch.stack(out[k]) for k in self.fields})
