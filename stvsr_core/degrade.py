"""How low-res frames are made from high-res ones, for training and for the evaluation protocol."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Top-left anchored crop to a multiple of `multiple` (the protocol's even crop)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % multiple, : w - w % multiple]


def downsample(H: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Bicubic with antialiasing, then rounded to 8 bits: real low-res video is 8-bit."""
    h, w = H.shape[-2:]
    L = F.interpolate(H.float(), size=(h // scale, w // scale), mode="bicubic", antialias=True,
                      align_corners=False)
    return (L.clamp(0, 1) * 255).round() / 255
