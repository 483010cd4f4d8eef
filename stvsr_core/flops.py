"""FLOPs of each step of a DualStream model, counted on the one composition (DualStream.middle)
by the counting runner: convolutions and matrix products (PyTorch's FlopCounterMode).

The DIS temporal backbone runs in OpenCV and is not counted (reported as None).
"""
from __future__ import annotations

import torch

from .dual_stream import DualStream
from .runner import CountingRunner
from .tiling import pad_to_multiple


def stage_flops(model: DualStream, width: int = 480, height: int = 270) -> dict:
    """FLOPs per call of each step for a low-res frame of width x height (padded as the engine
    does): "M_S" for one source frame, the other steps for one in-between frame."""
    model = model.eval()
    L = pad_to_multiple(torch.rand(1, 3, height, width), model.size_multiple)
    counter = CountingRunner()
    with torch.inference_mode():
        H = model.spatial(L, counter)
        model.middle(L, L, H, H, 0.5, run=counter)
    res = {step: (n or None) for step, n in counter.flops.items()}
    # per output pair of frames (x2): one source frame's M_S plus every step of the in-between frame
    res["per pair (2 output frames)"] = sum(counter.flops.values())
    return res


def parameter_count(model: DualStream) -> dict:
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in ("M_S", "M_T", "F", "R")}
