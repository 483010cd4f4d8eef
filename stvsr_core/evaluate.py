"""The evaluation protocol (shared/notes/evaluation.md): the paper's Table 2 on any triplet or
sequence folders, baselines and every stage of the model scored on the same frames.

A set whose root holds `times.json` has real frames at several times between its two input
frames (devsets.vimeo_times: t = 1/4, 1/2, 3/4 of Vimeo septuplets): it is scored per t,
every method at that t, one table group each."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from .degrade import crop_to_multiple, downsample
from .dual_stream import DualStream
from .engine import predict_pair
from .metrics import psnr, ssim, temporal_change_error
from .video_io import IMAGE_EXTS, _natural_key

STAGES = ("H_st", "H_ts", "H_F", "H_R")
TIMES_FILE = "times.json"  # {"inputs": [name at t=0, name at t=1], "targets": [[name, t], ...]}


@dataclass
class Triplet:
    name: str            # saved as <dataset>/<name>.png
    frames: tuple        # paths of frame t-1, t, t+1


def _load(p: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255


def find_triplets(root: Path) -> Iterator[Triplet]:
    """Triplet folders (im1..im3.png) and sequence folders (even frames in, odd predicted)."""
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=_natural_key):
        if all((d / f"im{i}.png").is_file() for i in (1, 2, 3)):
            yield Triplet(d.name, tuple(d / f"im{i}.png" for i in (1, 2, 3)))
            continue
        frames = sorted((p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=_natural_key)
        for k in range(0, len(frames) - 2, 2):
            yield Triplet(f"{d.name}/{frames[k + 1].stem}", tuple(frames[k:k + 3]))


@dataclass
class Item:
    """Two input frames and the real frames between them, each at its time t."""
    name: str
    ends: tuple          # paths of the input frames, at t = 0 and t = 1
    targets: tuple       # ((t, path), ...)


def find_items(root: Path) -> Iterator[Item]:
    """A times set's folders (TIMES_FILE), else every triplet of `find_triplets` at t = 1/2."""
    spec_file = Path(root) / TIMES_FILE
    if spec_file.is_file():
        spec = json.loads(spec_file.read_text())
        for d in sorted((p for p in Path(root).iterdir() if p.is_dir()), key=_natural_key):
            yield Item(d.name, tuple(d / f for f in spec["inputs"]), tuple((float(t), d / f) for f, t in spec["targets"]))
        return
    for tri in find_triplets(Path(root)):
        yield Item(tri.name, (tri.frames[0], tri.frames[2]), ((0.5, tri.frames[1]),))


def time_label(t: float) -> str:
    return str(Fraction(t).limit_denominator(12))


def peer_pipeline(model: DualStream, peers: bool):
    """The SPAN -> RIFE pipeline users would pick instead, when asked for and installed (x2)."""
    if not peers or model.scale != 2:
        return None, "not asked for" if not peers else "the peers are x2"
    from .backbones import peers as peer_mod
    reason = peer_mod.available()
    return (None, reason) if reason else (peer_mod.PeerPipeline(), None)


def evaluate(roots: list[str | Path], model: DualStream, save: Path | None = None, progress=None,
             peers: bool = True) -> dict:
    """{dataset: {method_or_stage: {"psnr", "ssim", "tcons", "n"}}} for every root.

    Every in-between method is also scored for temporal consistency (`tcons`, see
    metrics.temporal_change_error) over its own three output frames: the two input frames
    as that method upsamples them and its in-between frame.
    """
    baseline = DualStream({"scale": model.scale, "spatial": {"arch": "bicubic"},
                           "temporal": {"arch": "dis", "preset": "medium"}}).eval()
    peer, why_not = peer_pipeline(model, peers)
    if why_not and peers:
        print(f"stvsr eval: peer rows (SPAN -> RIFE) skipped: {why_not}")
    results = {}
    for root in map(Path, roots):
        per_t = (root / TIMES_FILE).is_file()
        group = (lambda t: f"{root.name} t={time_label(t)}") if per_t else (lambda t: root.name)
        scores = defaultdict(lambda: defaultdict(lambda: {"psnr": [], "ssim": [], "tcons": []}))
        items = list(find_items(root))
        if not items:
            raise ValueError(f"{root}: no triplet (im1..im3.png) or sequence folders inside")
        for i, item in enumerate(items):
            E = [crop_to_multiple(_load(p), model.scale)[None] for p in item.ends]
            L0, L1 = downsample(E[0], model.scale), downsample(E[1], model.scale)
            for t, target in item.targets:
                Ht = crop_to_multiple(_load(target), model.scale)[None]
                out = predict_pair(model, L0, L1, t)
                base = predict_pair(baseline, L0, L1, t)
                ends = {"base": (base.H_prev, base.H_next), "model": (out.H_prev, out.H_next)}
                preds = {"bicubic + blend": ("base", (1 - t) * base.H_prev + t * base.H_next),
                         "DIS T->S": ("base", base.H_ts), "DIS S->T": ("base", base.H_st)}
                if peer is not None:
                    p = peer(L0, L1, t)
                    ends["peer"] = (p["H_prev"], p["H_next"])
                    preds.update({"SPAN -> RIFE (S->T)": ("peer", p["S->T"]),
                                  "RIFE -> SPAN (T->S)": ("peer", p["T->S"])})
                preds.update({s: ("model", getattr(out, s)) for s in STAGES})
                rows = scores[group(t)]
                for k, (who, v) in preds.items():
                    rows[k]["psnr"].append(psnr(v, Ht))
                    rows[k]["ssim"].append(ssim(v, Ht))
                    a, b = ends[who]
                    rows[k]["tcons"].append(temporal_change_error([a, v, b], [E[0], Ht, E[1]]))
                # the input frames' own scores, the same in every t's group
                spatial = {"bicubic on input frame": base.H_prev, "M_S on input frame": out.H_prev}
                if peer is not None:
                    spatial["SPAN (ncnn) on input frame"] = p["H_prev"]
                for k, v in spatial.items():
                    rows[k]["psnr"].append(psnr(v, E[0]))
                    rows[k]["ssim"].append(ssim(v, E[0]))
                if save is not None:
                    name = f"{item.name}_t{time_label(t).replace('/', '-')}" if per_t else item.name
                    dst = Path(save) / root.name / f"{name}.png"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    img = (out.H_R[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                    Image.fromarray(img).save(dst)
            if progress:
                progress(root.name, i + 1, len(items))
        for g, rows in scores.items():
            results[g] = {k: {"psnr": float(np.mean(v["psnr"])), "ssim": float(np.mean(v["ssim"])),
                              "tcons": float(np.mean(v["tcons"])) if v["tcons"] else None,
                              "n": len(v["psnr"])} for k, v in rows.items()}
    return results


def format_table(results: dict) -> str:
    lines = []
    for ds, rows in results.items():
        n = next(iter(rows.values()))["n"]
        lines += [f"\n{ds} ({n} triplets)", f"{'method / stage':<28} {'PSNR':>7} {'SSIM':>7} {'tcons':>6}",
                  "-" * 51]
        for k, v in rows.items():
            tc = f"{v['tcons']:>6.2f}" if v.get("tcons") is not None else ""
            lines.append(f"{k:<28} {v['psnr']:>7.2f} {v['ssim']:>7.4f} {tc}")
    lines.append("\ntcons: temporal consistency, the mean absolute difference (8-bit levels) between the "
                 "output's and the truth's frame-to-frame change over each triplet (lower is better)")
    return "\n".join(lines)
