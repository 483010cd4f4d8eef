"""The paper's three training stages (Sec. 3.5) with the L1 losses of Eqs. 11-17.

Stage 1 pre-trains M_S (and a learned M_T) on their own tasks; stage 2 freezes them and trains
F and R on L_F + L_R; stage 3 fine-tunes everything on the full objective (Eq. 17, equal
weights). Resumable (a checkpoint per stage), logged (CSV), seeded; data-parallel under torchrun.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import load_checkpoint, model_state, read_checkpoint, save_checkpoint
from .data import TripletBatch
from .degrade import downsample
from .distill import DistillBatch, distill_loss
from .dual_stream import DualStream
from .stream_cache import StreamBatch

l1 = F.l1_loss


@dataclass
class StageSpec:
    steps: int
    lr: float
    batch: int = 16
    crop: int = 128
    parts: tuple[str, ...] = ()  # stage 1 only: the parts that learn (default: every trainable one)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _stage1_parts(model: DualStream, parts: tuple[str, ...] = ()) -> tuple[str, ...]:
    learns = model.info.trainable
    return tuple(p for p in learns if p in parts) if parts else learns


def stage_parameters(model: DualStream, stage: int, parts: tuple[str, ...] = ()):
    """Which sub-networks learn in each stage (stage 1: `parts` of them, when given)."""
    if stage == 1:
        learns = _stage1_parts(model, parts)
        mods = [getattr(model, part) for part in ("M_S", "M_T") if part in learns]
    elif stage == 2:
        mods = [model.F, model.R]
    else:
        mods = [model]
    return [p for m in mods for p in m.parameters()]


def stage2_streams(model: DualStream, L0: torch.Tensor, L1: torch.Tensor, t=0.5):
    """(H_st, H_ts) exactly as inference makes them (DualStream.streams, the engine's steps)."""
    _, H_st, H_ts = model.streams(L0, L1, model.spatial(L0), model.spatial(L1), t)
    return H_st, H_ts


def fusion_loss(model: DualStream, b: StreamBatch) -> tuple[torch.Tensor, dict]:
    """Stage 2's L_F + L_R (Eqs. 15-16) on given streams."""
    _, _, H_F = model.fuse(b.H_st, b.H_ts, b.cue)
    H_R = model.refine(H_F)
    terms = {"F": l1(H_F, b.target), "R": l1(H_R, b.target)}
    return terms["F"] + terms["R"], terms


def stage_loss(model: DualStream, hr: TripletBatch | StreamBatch | DistillBatch | torch.Tensor, stage: int,
               parts: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict]:
    """hr: a TripletBatch (high-res triplets [B, 3(time), 3, H, W] and each middle frame's t,
    a float or [B]; a bare tensor of triplets means t = 1/2), or for stage 2 a StreamBatch of
    cached streams (frozen backbones too slow to run every step). Stage 1 scores only `parts`
    when given (e.g. ("M_T",): M_T alone on a trained M_S). Returns the loss and its terms."""
    if isinstance(hr, StreamBatch):
        return fusion_loss(model, hr)
    if isinstance(hr, DistillBatch):  # stage 1 of M_S on a teacher's labels (distill.py)
        return distill_loss(model, hr)
    frames, t = (hr.frames, hr.t) if isinstance(hr, TripletBatch) else (hr, 0.5)
    s = model.scale
    H0, Ht, H1 = frames[:, 0], frames[:, 1], frames[:, 2]
    L0, Lt, L1 = (downsample(x, s) for x in (H0, Ht, H1))
    terms = {}
    if stage == 1:
        learns = _stage1_parts(model, parts)
        if "M_S" in learns:
            terms["M_S"] = l1(model.spatial(torch.cat([L0, Lt, L1])), torch.cat([H0, Ht, H1]))
        if "M_T" in learns:
            # its own task, at both resolutions it will meet: the low-res and the high-res frames
            terms["M_T"] = l1(model.M_T(L0, L1, t), Lt) + l1(model.M_T(H0, H1, t), Ht)
        return sum(terms.values()), terms
    if stage == 2:
        with torch.no_grad():  # M_S and M_T are frozen
            H_st, H_ts = stage2_streams(model, L0, L1, t)
            cue = model.cue(L0, L1, t)
        return fusion_loss(model, StreamBatch(H_st, H_ts, Ht, cue))
    out = model(L0, L1, t)
    terms = {"S->T": l1(out.H_st, Ht), "T->S": l1(out.H_ts, Ht), "F": l1(out.H_F, Ht), "R": l1(out.H_R, Ht),
             "M_S": l1(out.H_prev, H0) + l1(out.H_next, H1), "M_T": l1(out.L_mid, Lt)}
    return sum(terms.values()), terms


class StageLoss(torch.nn.Module):
    """One stage's loss as a module, so torchrun's DistributedDataParallel can wrap it."""

    def __init__(self, model: DualStream, stage: int, parts: tuple[str, ...] = ()):
        super().__init__()
        self.model, self.stage, self.parts = model, stage, tuple(parts)

    def forward(self, hr):
        return stage_loss(self.model, hr, self.stage, self.parts)


def _seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(out: Path, stage: int) -> Path:
    return out / f"stage{stage}.safetensors"


def run_stage(model: DualStream, sampler, stage: int, spec: StageSpec, out: Path, checkpoint_every: int = 250,
              seed: int = 0) -> None:
    """Train one stage; resumes from out/stage{N}.safetensors when present."""
    ckpt = checkpoint_path(out, stage)
    params = stage_parameters(model, stage, spec.parts)
    if not params:
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    train_step = StageLoss(model, stage, spec.parts)
    if dist.is_available() and dist.is_initialized():
        train_step = torch.nn.parallel.DistributedDataParallel(train_step, find_unused_parameters=True)
    opt = torch.optim.RAdam(params, lr=spec.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i / spec.steps, 1))))
    step = 0
    if ckpt.exists():
        step, rng = load_checkpoint(ckpt, model, opt, sched)
        sampler.rng = rng if _rank() == 0 else np.random.default_rng(seed + step + _rank())
    else:
        _seed(seed + 1000 * stage + _rank())
    sampler.crop = spec.crop
    log_path = out / "loss_log.csv" if _rank() == 0 else Path(os.devnull)
    new_log = not log_path.exists()
    bar = tqdm(total=spec.steps, initial=step, desc=f"stage {stage}", disable=_rank() != 0, dynamic_ncols=True)
    with open(log_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["stage", "step", "loss", "terms", "lr", "time"])
        model.train()
        t0 = time.time()
        while step < spec.steps:
            hr = sampler.batch(spec.batch)
            loss, terms = train_step(hr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if (step % 20 == 0 or step == spec.steps) and _rank() == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                writer.writerow([stage, step, f"{loss.item():.5f}",
                                 json.dumps({k: round(v.item(), 5) for k, v in terms.items()}),
                                 f"{sched.get_last_lr()[0]:.2e}", f"{time.time() - t0:.1f}"])
                fh.flush()
            if (step % checkpoint_every == 0 or step == spec.steps) and _rank() == 0:
                save_checkpoint(ckpt, model, opt, sched, step, sampler.rng)
    bar.close()
    model.eval()


def train(model: DualStream, sampler, out: str | Path, stages: dict[int, StageSpec], seed: int = 0,
          checkpoint_every: int = 250) -> DualStream:
    """Run the requested stages in order (each resumes from its checkpoint) and return the model.
    `sampler`: one for every stage, or {stage: sampler} (a teacher's labels for stage 1)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pickled = sorted(out.glob("stage*.pt"))
    if pickled:
        raise SystemExit(f"stvsr train: {pickled[0]} is a pickled checkpoint of an older stvsr, which is never "
                         f"unpickled (it could run code): delete it, or train into a new --out folder")
    for stage in sorted(stages):
        if not checkpoint_path(out, stage).exists():  # start this stage from the previous stage's result
            earlier = [checkpoint_path(out, s) for s in sorted(stages) if s < stage]
            if earlier and earlier[-1].exists():
                model.load_state_dict(model_state(read_checkpoint(earlier[-1])[0]))
        draws = sampler[stage] if isinstance(sampler, dict) else sampler
        run_stage(model, draws, stage, stages[stage], out, checkpoint_every, seed)
    return model
