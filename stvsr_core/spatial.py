"""Spatial upsampling sub-networks M_S: one low-res frame in, one high-res frame out (Eq. 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones.adapters import SpanSR


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """The skip path of every M_S: the networks only learn the detail bicubic misses.
    (Contiguous input: PyTorch's CPU bicubic is about 1.6x slower on channels_last.)"""
    return F.interpolate(x.contiguous(), scale_factor=scale, mode="bicubic", align_corners=False)


class ESPCN(nn.Module):
    """ESPCN (Shi et al. 2016), the paper's fast M_S, with a bicubic skip.

    Thin layers at low resolution; kept as the reference backbone.
    """

    size_multiple = 1

    def __init__(self, *, scale: int = 2, channels: tuple[int, int] = (64, 32)):
        super().__init__()
        self.scale = scale
        c1, c2 = channels
        self.conv1 = nn.Conv2d(3, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv3 = nn.Conv2d(c2, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(L))
        x = torch.tanh(self.conv2(x))
        return self.shuffle(self.conv3(x)) + bicubic_up(L, self.scale)


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_a = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(F.relu(self.conv_a(x)))


class UnshuffleSR(nn.Module):
    """A compact SR network built for CPUs (our default M_S).

    The frame is pixel-unshuffled by 2 first, so every convolution runs at a quarter of the
    low-res pixel count with wide-enough layers to keep the CPU's vector units busy; one
    pixel shuffle by 2*scale at the end produces the high-res detail, added to bicubic.
    Any integer scale works without a redesign (only the tail's width changes).
    """

    size_multiple = 2

    def __init__(self, *, scale: int = 2, channels: int = 48, blocks: int = 2):
        super().__init__()
        self.scale = scale
        self.unshuffle = nn.PixelUnshuffle(2)
        self.head = nn.Conv2d(12, channels, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 3 * (2 * scale) ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2 * scale)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.head(self.unshuffle(L)))
        x = self.body(x)
        return self.shuffle(self.tail(x)) + bicubic_up(L, self.scale)


class Bicubic(nn.Module):
    """Weight-free M_S: plain bicubic upsampling (a baseline and a fixed backbone)."""

    size_multiple = 1

    def __init__(self, *, scale: int = 2):
        super().__init__()
        self.scale = scale

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return bicubic_up(L, self.scale)


# "span": pretrained, its weights come from the backbone store (stvsr fetch-backbones)
SPATIAL = {"espcn": ESPCN, "unshuffle_sr": UnshuffleSR, "bicubic": Bicubic, "span": SpanSR}
