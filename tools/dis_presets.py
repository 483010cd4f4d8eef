"""Stream S->T with each DIS preset on the dev sets: how preset "dense" was chosen.

For every triplet: flows at low resolution, intermediate flows upsampled (as stvsr-fast runs
DIS), both warping bicubic and a model's M_S frames; also DIS at high resolution on bicubic
frames (the eval's "DIS S->T" baseline). Prints PSNR of the in-between frame and DIS's time
per pair on one thread. Run:

    .venv/bin/python tools/dis_presets.py ../shared/data/eval/vimeo_septuplet ../shared/data/eval/ucf101 \\
        ~/.cache/stvsr-devsets/vimeo_wide ~/.cache/stvsr-devsets/cockatoo_wide
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stvsr_core.degrade import crop_to_multiple, downsample
from stvsr_core.evaluate import _load, find_items
from stvsr_core.metrics import psnr
from stvsr_core.registry import load_model
from stvsr_core.spatial import bicubic_up
from stvsr_core.temporal import DISInterp


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sets", nargs="+")
    p.add_argument("--model", default="stvsr-fast", help="whose M_S makes the high-res frames")
    p.add_argument("--presets", nargs="+", default=["fast", "medium", "dense"])
    p.add_argument("--tuned", nargs="*", default=[], metavar="NAME:Param=V,...",
                   help="also medium with these DIS settings, e.g. stride2:PatchStride=2 "
                        "stride2-it50:PatchStride=2,GradientDescentIterations=50")
    args = p.parse_args()
    for spec in args.tuned:  # extra presets: medium with some settings changed
        name, settings = spec.split(":", 1)
        DISInterp.PRESETS[name] = DISInterp.PRESETS["medium"]
        DISInterp.TUNING[name] = {k: int(v) for k, v in (kv.split("=") for kv in settings.split(","))}
        args.presets.append(name)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    model = load_model(args.model).eval()
    for root in args.sets:
        psnrs, secs = {}, {}
        for item in find_items(Path(root)):
            E = [crop_to_multiple(_load(q), 2)[None] for q in item.ends]
            L0, L1 = downsample(E[0], 2), downsample(E[1], 2)
            t, target = item.targets[0]
            Ht = crop_to_multiple(_load(target), 2)[None]
            B0, B1 = bicubic_up(L0, 2).clamp(0, 1), bicubic_up(L1, 2).clamp(0, 1)
            with torch.no_grad():
                S0, S1 = model.spatial(L0).clamp(0, 1), model.spatial(L1).clamp(0, 1)
            runs = [(name, False) for name in args.presets] + [("medium, high res", True)]
            for name, high in runs:
                dis = DISInterp(preset=name.split(",")[0], high_res_flow="upsample")
                t0 = time.perf_counter()
                flows = dis.flows(B0, B1) if high else dis.flows(L0, L1)
                secs.setdefault(name, []).append(time.perf_counter() - t0)
                for frames, H0, H1 in (("bicubic", B0, B1), ("M_S", S0, S1)):
                    # stream S->T as the engine composes it (DISInterp.pair, upsampled flows), or
                    # with the high-res flows as the eval's baseline does (DISInterp.synthesize)
                    H_st = (dis.synthesize(H0, H1, flows, t) if high
                            else dis.pair(L0, L1, H0, H1, t, (flows, None))[1])
                    psnrs.setdefault((name, frames), []).append(psnr(H_st.clamp(0, 1), Ht))
        print(f"{Path(root).name} ({len(secs[runs[0][0]])} triplets)")
        print(f"  {'DIS preset':18s} {'bicubic':>8s} {args.model + ' M_S':>16s} {'ms per pair':>12s}")
        for name, _ in runs:
            print(f"  {name:18s} {np.mean(psnrs[name, 'bicubic']):8.2f} {np.mean(psnrs[name, 'M_S']):16.2f} "
                  f"{1000 * np.mean(secs[name]):12.1f}")


if __name__ == "__main__":
    main()
