"""Backward warping by an optical flow field (kornia's remap does the sampling)."""
from __future__ import annotations

import torch
from kornia.geometry.transform import remap

try:  # kornia >= 0.8.3 moved it
    from kornia.geometry import create_meshgrid
except ImportError:  # pragma: no cover
    from kornia.utils import create_meshgrid


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at x + flow (flow in pixels, [B, 2, H, W], x first)."""
    b, _, h, w = image.shape
    grid = create_meshgrid(h, w, normalized_coordinates=False, device=image.device, dtype=flow.dtype)
    map_x = grid[..., 0] + flow[:, 0]
    map_y = grid[..., 1] + flow[:, 1]
    return remap(image, map_x.to(image.dtype), map_y.to(image.dtype), mode="bilinear",
                 padding_mode="border", align_corners=True)


def intermediate_flows(f01: torch.Tensor, f10: torch.Tensor, t: float | torch.Tensor):
    """Super SloMo's approximation of the flows from time t back to frames 0 and 1."""
    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
    return ft0, ft1
