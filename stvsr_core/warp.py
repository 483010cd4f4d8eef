"""Backward warping by an optical flow field, and Super SloMo's intermediate flows.

Warping calls torch's `grid_sample` directly with a cached, normalised pixel grid: kornia's
`remap` rebuilds and re-normalises its grid on every call. Building the sampling grid in
grid_sample's own layout ([B, H, W, 2]) in one op, and sampling a contiguous image, made a
960x540 warp 2.6x faster on one CPU thread (5.4 against 13.9 ms; grid_sample itself is 3.5 ms,
and 9.7 on a channels_last image): it is the engine's hottest step.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[2, H, W]: each pixel's x and y, for one frame size."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys))


@functools.lru_cache(maxsize=8)
def _scale(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixels to grid_sample's [-1, 1] coordinates (align_corners=True), x first."""
    return torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=device, dtype=dtype)


@functools.lru_cache(maxsize=8)
def _sample_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, H, W, 2]: each pixel's position in grid_sample's coordinates."""
    return (_pixel_grid(h, w, device, dtype).permute(1, 2, 0) * _scale(h, w, device, dtype) - 1)[None].contiguous()


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at x + flow (flow in pixels, [B, 2, H, W], x first); borders replicated."""
    h, w = image.shape[-2:]
    grid = torch.addcmul(_sample_grid(h, w, flow.device, flow.dtype), flow.permute(0, 2, 3, 1),
                         _scale(h, w, flow.device, flow.dtype))
    return F.grid_sample(image.contiguous(), grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def intermediate_flows(f01: torch.Tensor, f10: torch.Tensor, t: float | torch.Tensor):
    """Super SloMo's approximation of the flows from time t back to frames 0 and 1."""
    ft0 = -(1 - t) * t * f01 + t * t * f10
    ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
    return ft0, ft1


def forward_splat(values: torch.Tensor, flow: torch.Tensor, importance: torch.Tensor | None = None):
    """Weighted-average forward splatting: each pixel's `values` ([B, C, H, W]) pushed to
    x + flow, spread bilinearly over the four neighbours and weighted by `importance`
    ([B, 1, H, W], e.g. exp(-k * warp error): Niklaus and Liu's softmax splatting, so where
    pixels collide the consistent one, in front, wins). Returns (the splatted values, normalised
    where anything landed, zero in holes; the [B, 1, H, W] weight that landed there)."""
    b, c, h, w = values.shape
    pos = _pixel_grid(h, w, flow.device, flow.dtype) + flow
    x0, y0 = pos[:, 0].floor(), pos[:, 1].floor()
    acc = values.new_zeros(b, c + 1, h * w)
    imp = torch.ones_like(values[:, :1]) if importance is None else importance
    src = torch.cat([values * imp, imp], 1).reshape(b, c + 1, -1)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (pos[:, 0] - xi).abs()) * (1 - (pos[:, 1] - yi).abs())
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            wgt = (wgt * inside).reshape(b, 1, -1)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(b, 1, -1).expand(b, c + 1, -1)
            acc.scatter_add_(2, idx, src * wgt)
    acc = acc.reshape(b, c + 1, h, w)
    weight = acc[:, c:]
    return acc[:, :c] / weight.clamp_min(1e-6) * (weight > 1e-6), weight


def flow_errors(I0: torch.Tensor, I1: torch.Tensor, f01: torch.Tensor, f10: torch.Tensor):
    """([B, 1, H, W] twice) each frame's photometric error under its flow: I0 against I1 warped
    back along f01, and I1 against I0 along f10. High where a pixel has no match in the other
    frame (occluded there) or the flow is wrong; its exp(-20 e) is a splatting importance."""
    I0, I1 = I0.float(), I1.float()
    return ((I0 - backward_warp(I1, f01)).abs().mean(1, keepdim=True),
            (I1 - backward_warp(I0, f10)).abs().mean(1, keepdim=True))


def splatted_intermediate_flows(f01: torch.Tensor, f10: torch.Tensor, t, z0=None, z1=None):
    """The flows from time t back to frames 0 and 1 by forward-splatting the DIS flows to time t
    (both directions averaged; holes fall back to Super SloMo's approximation). Also returns
    the splat coverage [B, 1, H, W] (0: a hole). z0, z1: each frame's splatting importance
    (forward_splat). Follows large motion where the approximation, which reads the flows at the
    wrong place, fails."""
    # from frame 0: x0 lands at x0 + t*f01, its flows back are -t*f01 (to 0) and (1-t)*f01 (to 1)
    a, wa = forward_splat(torch.cat([-t * f01, (1 - t) * f01], 1), t * f01, z0)
    # from frame 1: x1 lands at x1 + (1-t)*f10, back to 0 by t*f10, to 1 by -(1-t)*f10
    b, wb = forward_splat(torch.cat([t * f10, -(1 - t) * f10], 1), (1 - t) * f10, z1)
    wa_, wb_ = (wa > 1e-6).float() * (1 - t), (wb > 1e-6).float() * t  # each side by its nearness in time
    cover = wa_ + wb_
    mixed = (wa_ * a + wb_ * b) / cover.clamp_min(1e-6)
    ft0, ft1 = intermediate_flows(f01, f10, t)
    fallback = torch.cat([ft0, ft1], 1)
    out = torch.where(cover > 1e-6, mixed, fallback)
    return out[:, :2], out[:, 2:], (cover > 1e-6).float()
