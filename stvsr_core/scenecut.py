"""Scene-cut detection: interpolating across a hard cut morphs two unrelated shots."""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_THRESHOLD = 0.15


def scene_score(a: torch.Tensor, b: torch.Tensor, width: int = 64) -> float:
    """Mean absolute luma difference of two frames ([B, 3, H, W] in 0..1) shrunk to `width` px.

    Shrinking first makes the score ignore fine motion (which shifts texture, not the mean
    brightness of a block) while a cut changes the picture everywhere.
    """
    def small(x):
        x = x[:1].float()
        y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        h, w = y.shape[-2:]
        size = (max(1, round(h * width / max(w, 1))), width) if w > width else (h, w)
        return F.interpolate(y, size=size, mode="area")

    return float((small(a) - small(b)).abs().mean())


def is_cut(a: torch.Tensor, b: torch.Tensor, threshold: float | None) -> bool:
    """True when a pair straddles a cut; a threshold of None or <= 0 turns detection off."""
    return bool(threshold) and threshold > 0 and scene_score(a, b) > threshold
