"""Padding to the networks' size multiple, and tiled processing with feathered seams."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right edges up to a multiple; crop back with [..., :h, :w]."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def _ramp(n: int, lo_edge: bool, hi_edge: bool, margin: int, device, dtype) -> torch.Tensor:
    """1-D seam weights: 0 in the outer half of an overlap margin, rising to 1 at its inner half."""
    pos = torch.arange(n, device=device, dtype=dtype)
    w = torch.ones(n, device=device, dtype=dtype)
    if margin <= 0:
        return w
    half = max(margin / 2, 1.0)
    if lo_edge:
        w = torch.minimum(w, ((pos + 0.5 - half) / half).clamp(0, 1))
    if hi_edge:
        w = torch.minimum(w, ((n - pos - 0.5 - half) / half).clamp(0, 1))
    return w


def run_tiled(fn: Callable[[list, list], Sequence[torch.Tensor]], lr: list, hr: list, *, scale: int,
              tile: int, pad: int, multiple: int) -> list[torch.Tensor]:
    """Run fn on overlapping tiles of the low-res inputs `lr` (and matching crops of the high-res
    inputs `hr`) and blend its high-res outputs. All inputs are already padded to `multiple`.

    Tiles step by `tile` low-res pixels and reach `pad` pixels past their core on every side
    that has a neighbour; the outer half of that overlap gets no weight, the inner half fades.
    """
    h, w = lr[0].shape[-2:]
    tile, pad = _round_up(max(tile, multiple), multiple), _round_up(pad, multiple) if pad else 0
    outs: list[torch.Tensor] | None = None
    weight = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, yb = max(0, y0 - pad), min(h, y0 + tile + pad)
            xa, xb = max(0, x0 - pad), min(w, x0 + tile + pad)
            res = fn([t[..., ya:yb, xa:xb] for t in lr],
                     [t[..., ya * scale:yb * scale, xa * scale:xb * scale] for t in hr])
            ref = res[0]
            if outs is None:
                outs = [r.new_zeros(r.shape[:-2] + (h * scale, w * scale)) for r in res]
                weight = ref.new_zeros((1, 1, h * scale, w * scale))
            m = pad * scale
            wy = _ramp((yb - ya) * scale, ya > 0, yb < h, m, ref.device, ref.dtype)
            wx = _ramp((xb - xa) * scale, xa > 0, xb < w, m, ref.device, ref.dtype)
            wt = (wy[:, None] * wx[None, :])[None, None]
            sl = (..., slice(ya * scale, yb * scale), slice(xa * scale, xb * scale))
            for o, r in zip(outs, res):
                o[sl] += r * wt
            weight[sl] += wt
    return [o / weight for o in outs]
