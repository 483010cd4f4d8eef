"""Fusion network F (Sec. 3.2, supplement Table 3): a U-Net that predicts the blending masks.

Input: the two stream outputs H_st and H_ts concatenated (6 channels). Table 3 lists 3 input
channels, but the text says F blends both streams, which it must see to do so; a 3-channel
input could only be one of them. Output: one mask per stream and pixel (2 channels; 1 for the
one-mask variant, M_st = 1 - M_ts). The paper's remark that two masks add only 0.001% of the
parameters fits exactly one extra output channel of the last 3x3 conv (32*9+1 = 289 weights
of the 19.8 M in Table 3's network: 0.0015%), not 3 or 6, so the masks are per pixel, shared by R, G and B.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Widths of the six resolution levels and the kernel sizes of their convolutions.
PRESETS = {
    "paper": dict(widths=(32, 64, 128, 256, 512, 512), kernels=(7, 5, 3, 3, 3, 3), unshuffle=1),
    # CPU-friendly: all convolutions at half resolution (pixel-unshuffled input), thin levels.
    "lite": dict(widths=(24, 32, 48, 64, 64, 64), kernels=(3, 3, 3, 3, 3, 3), unshuffle=2),
    # the default since the speed work: masks from a quarter-resolution U-Net of four levels
    # (about 1/5 of lite's FLOPs); masks are smooth, so they need little resolution.
    "fast": dict(widths=(16, 32, 48, 64), kernels=(3, 3, 3, 3), unshuffle=4),
}


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.LeakyReLU(0.1))


class FusionUNet(nn.Module):
    """U-Net F with five average-pool downsamplings and five bilinear upsamplings."""

    INPUTS = {"streams": 6, "streams+diff": 9, "streams+dis_error": 7}
    single_stream = False  # both streams are computed and blended

    def __init__(self, *, preset: str = "lite", masks: int = 2, widths=None, kernels=None, unshuffle=None,
                 inputs: str = "streams", init_st: float = 0.5):
        super().__init__()
        if masks not in (1, 2):
            raise ValueError(f"FusionUNet: masks must be 1 or 2, got {masks}")
        if inputs not in self.INPUTS:
            raise ValueError(f"FusionUNet: inputs must be one of {sorted(self.INPUTS)}, got {inputs!r}")
        # "streams+diff" also feeds |H_st - H_ts|: where the streams disagree is where one of them
        # is wrong (a conv could form H_st - H_ts, not its magnitude). "streams+dis_error" feeds
        # DualStream.cue: where DIS's two warped frames disagree, i.e. where classical flow fails
        self.inputs = inputs
        self.needs_cue = inputs == "streams+dis_error"
        cfg = dict(PRESETS[preset])
        cfg.update({k: v for k, v in dict(widths=widths, kernels=kernels, unshuffle=unshuffle).items() if v is not None})
        w, k, r = tuple(cfg["widths"]), tuple(cfg["kernels"]), int(cfg["unshuffle"])
        self.masks, self.unshuffle = masks, r
        self.size_multiple = 2 ** (len(w) - 1) * r
        cin = self.INPUTS[inputs] * r * r
        self.enc = nn.ModuleList()
        for i in range(len(w)):
            self.enc.append(nn.Sequential(_conv(cin if i == 0 else w[i - 1], w[i], k[i]), _conv(w[i], w[i], k[i])))
        self.dec_a = nn.ModuleList([_conv(w[i + 1], w[i], 3) for i in range(len(w) - 1)])
        self.dec_b = nn.ModuleList([_conv(2 * w[i], w[i], 3) for i in range(len(w) - 1)])
        self.out = nn.Conv2d(w[0], masks * r * r, 3, padding=1)
        # start from a fixed blend: M_st = init_st everywhere (0.5: the even blend). With one mask,
        # init_st near 1 starts F from stream S->T, the better one on most footage, so it only
        # has to learn where T->S helps; from 0.5 a small F stayed at the plain average.
        if not 0 < init_st < 1:
            raise ValueError(f"FusionUNet: init_st must lie in (0, 1), got {init_st}")
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if masks == 1:
            nn.init.constant_(self.out.bias, math.log(init_st / (1 - init_st)))

    def forward(self, H_st: torch.Tensor, H_ts: torch.Tensor, cue: torch.Tensor | None = None):
        """Returns (M_st, M_ts), each [B, 1, H, W] in [0, 1]."""
        extra = [(H_st - H_ts).abs()] if self.inputs == "streams+diff" else []
        if self.needs_cue:
            if cue is None:
                raise ValueError("this F needs the DIS warp-error cue (DualStream.cue) beside the two streams")
            extra = [cue.to(H_st.dtype)]
        x = torch.cat([H_st, H_ts] + extra, 1)
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        skips = []
        for i, enc in enumerate(self.enc):
            x = enc(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.dec_a))):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.dec_b[i](torch.cat([self.dec_a[i](x), skips[i]], 1))
        m = self.out(x)
        if self.unshuffle > 1:
            m = F.pixel_shuffle(m, self.unshuffle)
        m = torch.sigmoid(m)
        if self.masks == 1:
            return m, 1 - m
        return m[:, :1], m[:, 1:]


class StreamST(nn.Module):
    """No F: stream S->T alone (M_st = 1, M_ts = 0), so neither F nor stream T->S is computed.

    For the `realtime` preset, where the fusion's and the second stream's cost buys less than
    it costs (config `fusion: {preset: none}`); R still refines the frame.
    """

    single_stream = True
    needs_cue = False
    size_multiple = 1

    def forward(self, H_st: torch.Tensor, H_ts: torch.Tensor | None = None):
        ones = torch.ones_like(H_st[:, :1])
        return ones, torch.zeros_like(ones)


def build_fusion(cfg: dict) -> nn.Module:
    return StreamST() if cfg.get("preset") == "none" else FusionUNet(**cfg)
