"""Refinement network R (Sec. 3.3, supplement Table 4): H_R = R(H_F) + H_F (Eq. 10)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spatial import ResBlock

PRESETS = {
    # Table 4: conv 7x7 3->128, three residual blocks of two 3x3 128->128 convs, conv 3x3 128->3.
    "paper": dict(width=128, blocks=3, head_kernel=7, unshuffle=1),
    # CPU-friendly: the same shape on the pixel-unshuffled frame (half resolution, 12 channels).
    "lite": dict(width=32, blocks=2, head_kernel=3, unshuffle=2),
    # the default since the speed work: on the frame unshuffled by 4 (48 channels at a quarter
    # resolution), one residual block; about half of lite's FLOPs in wider, faster layers.
    "fast": dict(width=48, blocks=1, head_kernel=3, unshuffle=4),
}


class Refine(nn.Module):
    """R: eight (paper) or six (lite) convolutions, no resampling of features, residual output."""

    identity = False  # like F's single_stream: a plain bool the composition reads

    def __init__(self, *, preset: str = "lite", width=None, blocks=None, head_kernel=None, unshuffle=None):
        super().__init__()
        cfg = dict(PRESETS[preset])
        cfg.update({k: v for k, v in dict(width=width, blocks=blocks, head_kernel=head_kernel,
                                          unshuffle=unshuffle).items() if v is not None})
        r, c, k = int(cfg["unshuffle"]), int(cfg["width"]), int(cfg["head_kernel"])
        self.unshuffle = r
        self.size_multiple = r
        self.head = nn.Conv2d(3 * r * r, c, k, padding=k // 2)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(int(cfg["blocks"]))])
        self.tail = nn.Conv2d(c, 3 * r * r, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as the identity: H_R = H_F
        nn.init.zeros_(self.tail.bias)

    def forward(self, H_F: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(H_F, self.unshuffle) if self.unshuffle > 1 else H_F
        x = self.tail(F.relu(self.body(F.relu(self.head(x)))))
        if self.unshuffle > 1:
            x = F.pixel_shuffle(x, self.unshuffle)
        return H_F + x


class NoRefine(nn.Module):
    """No R: H_R = H_F. For the `realtime` preset, where R's cost (8 ms of ~58 per pair at
    480x270) bought 0.2 dB on one dev set and nothing on the other (docs/MODELS.md)."""

    size_multiple = 1
    identity = True  # the composition skips it (and the layout copies of a tiled step)

    def forward(self, H_F: torch.Tensor) -> torch.Tensor:
        return H_F


def build_refine(cfg: dict) -> nn.Module:
    return NoRefine() if cfg.get("preset") == "none" else Refine(**cfg)
