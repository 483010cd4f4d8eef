"""`stvsr bench --pareto out.png`: output frames/s against dev-set PSNR, measured in one run,
for every model given, DIS S->T, ffmpeg's minterpolate and the SPAN -> RIFE peer pipeline.

Speed comes from the same frames and timing as the rest of `stvsr bench`; quality from the
evaluation protocol (evaluate.py) on the dev sets, with ffmpeg scored on the same triplets.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bench import bench_size, ffmpeg_fps, median_time, peer_fps, FFMPEG_FILTER
from .degrade import crop_to_multiple, downsample
from .evaluate import _load, evaluate, find_triplets
from .metrics import psnr
from .spatial import Bicubic
from .temporal import DISInterp

DIS_ST, FFMPEG, PEER = "DIS S->T (bicubic, then DIS)", "ffmpeg minterpolate + lanczos", "SPAN x2 -> RIFE 4.25 (peer)"


def _png(x: torch.Tensor, path: Path) -> None:
    Image.fromarray((x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)


def ffmpeg_middle(L0: torch.Tensor, L1: torch.Tensor, exe: str) -> torch.Tensor:
    """ffmpeg's in-between frame of two low-res frames, upscaled 2x with Lanczos: the filter
    `stvsr bench` times. minterpolate emits nothing for a 2-frame clip, so the last frame is
    repeated; output 2 of 1, 1.5, 2, ... is the middle."""
    h, w = L0.shape[-2:]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for i, x in enumerate((L0, L1, L1), 1):
            _png(x, t / f"{i}.png")
        vf = FFMPEG_FILTER.format(fps=2, w=2 * w, h=2 * h)
        subprocess.run([exe, "-nostdin", "-v", "error", "-framerate", "1", "-i", str(t / "%d.png"), "-vf", vf,
                        "-fps_mode", "passthrough", str(t / "o%d.png")], check=True)
        return _load(t / "o2.png")[None]


def ffmpeg_psnr(roots: list[Path], progress=None) -> dict | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    out = {}
    for root in roots:
        scores = []
        for tri in find_triplets(root):
            H = [crop_to_multiple(_load(p), 2)[None] for p in tri.frames]
            scores.append(psnr(ffmpeg_middle(downsample(H[0], 2), downsample(H[2], 2), exe), H[1]))
        out[root.name] = float(np.mean(scores))
        if progress:
            progress(f"ffmpeg on {root.name}: {out[root.name]:.2f} dB")
    return out


def dis_st_fps(frames: list, runs: int) -> float:
    """Bicubic once per input frame, DIS at high resolution once per pair (streamed)."""
    up, dis = Bicubic(scale=2), DISInterp(preset="medium")
    L = [f[None] for f in frames]

    def job():
        with torch.inference_mode():
            prev = up(L[0])
            for x in L[1:]:
                cur = up(x)
                dis(prev, cur)
                prev = cur
    return (2 * len(frames) - 1) / median_time(job, runs)


def measure(models: dict, roots: list[Path], width: int, height: int, frames_in: int, runs: int,
            device: str, peak: float, peer: bool, progress=print) -> list[dict]:
    """[{name, fps_out, psnr: {dataset: dB}}] for every point of the figure."""
    points = []
    frames = None
    for i, (name, model) in enumerate(models.items()):
        progress(f"pareto: {name} on the dev sets ...")
        scores = evaluate(roots, model, peers=peer and i == 0)
        progress(f"pareto: {name} at {width}x{height} ...")
        r = bench_size(model, width, height, frames_in, runs, "torch", device, peak)
        frames = r.pop("frames")
        points.append({"name": name, "fps_out": r["fps_out"], "psnr": {d: s["H_R"]["psnr"] for d, s in scores.items()}})
        if i == 0:
            base = scores
    points.append({"name": DIS_ST, "fps_out": dis_st_fps(frames, runs),
                   "psnr": {d: s["DIS S->T"]["psnr"] for d, s in base.items()}})
    peer_row = "SPAN -> RIFE (S->T)"
    if peer and all(peer_row in s for s in base.values()):
        progress("pareto: the peer pipeline ...")
        points.append({"name": PEER, "fps_out": peer_fps(frames, runs)["fps_out"],
                       "psnr": {d: s[peer_row]["psnr"] for d, s in base.items()}})
    ff = ffmpeg_psnr(roots, progress)
    if ff is not None:
        points.append({"name": FFMPEG, "fps_out": ffmpeg_fps(frames, Fraction(25), runs)["fps_out"], "psnr": ff})
    return points


def plot(points: list[dict], path: str | Path, title: str) -> None:
    """One panel per dev set: frames/s (log) across, PSNR up; up and right is better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(points[0]["psnr"])
    cols = min(2, len(sets))
    rows = -(-len(sets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat[len(sets):]:
        ax.set_visible(False)
    for ax, ds in zip(axes.flat, sets):
        for p in points:
            ours = not p["name"].startswith(("DIS", "ffmpeg", "SPAN"))
            ax.scatter(p["fps_out"], p["psnr"][ds], s=46, marker="o" if ours else "s",
                       color="tab:blue" if ours else "tab:gray", zorder=3)
            # stvsr's labels above their points, the references' below, so neighbours do not collide
            ax.annotate(p["name"], (p["fps_out"], p["psnr"][ds]), textcoords="offset points",
                        xytext=(6, 5) if ours else (6, -11), fontsize=8,
                        color="tab:blue" if ours else "dimgray")
        ax.set_xscale("log")
        ax.set_xlabel("output frames/s (log scale)")
        ax.set_ylabel("PSNR of the in-between frame (dB)")
        ax.set_title(ds, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.margins(x=0.25, y=0.12)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
