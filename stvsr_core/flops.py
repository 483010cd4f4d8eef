"""FLOPs of each stage of a DualStream model (PyTorch's FlopCounterMode: convolutions and matmuls).

The DIS temporal backbone runs in OpenCV and is not counted (reported as None).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .dual_stream import DualStream
from .tiling import pad_to_multiple


def _count(fn, *args) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops())


def stage_flops(model: DualStream, width: int = 480, height: int = 270) -> dict:
    """FLOPs per call of each stage for a low-res frame of width x height (padded as the engine does)."""
    model = model.eval()
    L = pad_to_multiple(torch.rand(1, 3, height, width), model.size_multiple)
    with torch.inference_mode():
        H = model.spatial(L)
    low, high = model.interpolators()
    counted = lambda m: any(True for _ in m.parameters())  # DIS (OpenCV) has none and is not counted
    res = {
        "M_S": _count(model.M_S, L),
        "M_T (low-res)": _count(low, L, L) if counted(low) else None,
        "M_T (high-res)": _count(high, H, H) if counted(high) else None,
        "F": _count(model.fuse, H, H, model.cue(L, L)),
        "R": _count(model.R, H),
    }
    # per output pair of frames: one input frame's M_S, plus the in-between frame (M_T twice,
    # M_S on L_mid, F, R)
    known = [v for v in res.values() if v is not None]
    res["per pair (2 output frames)"] = sum(known) + res["M_S"]
    return res


def parameter_count(model: DualStream) -> dict:
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("M_S", "M_T", "F", "R")}
