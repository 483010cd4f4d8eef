"""The evaluation protocol (shared/notes/evaluation.md): the paper's Table 2 on any triplet or
sequence folders, baselines and every stage of the model scored on the same frames."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
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
        scores = defaultdict(lambda: {"psnr": [], "ssim": [], "tcons": []})
        triplets = list(find_triplets(root))
        if not triplets:
            raise ValueError(f"{root}: no triplet (im1..im3.png) or sequence folders inside")
        for i, tri in enumerate(triplets):
            H = [crop_to_multiple(_load(p), model.scale)[None] for p in tri.frames]
            L0, L1 = downsample(H[0], model.scale), downsample(H[2], model.scale)
            out = predict_pair(model, L0, L1)
            base = predict_pair(baseline, L0, L1)
            ends = {"base": (base.H_prev, base.H_next), "model": (out.H_prev, out.H_next)}
            preds = {"bicubic + blend": ("base", (base.H_prev + base.H_next) / 2),
                     "DIS T->S": ("base", base.H_ts), "DIS S->T": ("base", base.H_st)}
            if peer is not None:
                p = peer(L0, L1)
                ends["peer"] = (p["H_prev"], p["H_next"])
                preds.update({"SPAN -> RIFE (S->T)": ("peer", p["S->T"]),
                              "RIFE -> SPAN (T->S)": ("peer", p["T->S"])})
            preds.update({s: ("model", getattr(out, s)) for s in STAGES})
            for k, (who, v) in preds.items():
                scores[k]["psnr"].append(psnr(v, H[1]))
                scores[k]["ssim"].append(ssim(v, H[1]))
                a, b = ends[who]
                scores[k]["tcons"].append(temporal_change_error([a, v, b], H))
            spatial = {"bicubic on input frame": base.H_prev, "M_S on input frame": out.H_prev}
            if peer is not None:
                spatial["SPAN (ncnn) on input frame"] = p["H_prev"]
            for k, v in spatial.items():
                scores[k]["psnr"].append(psnr(v, H[0]))
                scores[k]["ssim"].append(ssim(v, H[0]))
            if save is not None:
                dst = Path(save) / root.name / f"{tri.name}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                img = (out.H_R[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                Image.fromarray(img).save(dst)
            if progress:
                progress(root.name, i + 1, len(triplets))
        results[root.name] = {k: {"psnr": float(np.mean(v["psnr"])), "ssim": float(np.mean(v["ssim"])),
                                  "tcons": float(np.mean(v["tcons"])) if v["tcons"] else None,
                                  "n": len(v["psnr"])} for k, v in scores.items()}
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
