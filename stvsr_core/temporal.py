"""Temporal upsampling sub-networks M_T: two frames and a time t in (0, 1) -> the frame at t (Eq. 2).

Both work at any resolution: the same M_T runs on low-res frames (stream T->S) and on
high-res frames (stream S->T).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones.adapters import PerResolutionMT, RifeMT
from .descriptor import TemporalNet, TemporalTraits
from .warp import backward_warp, flow_errors, intermediate_flows, splatted_intermediate_flows


def _time_map(t, like: torch.Tensor) -> torch.Tensor:
    """t as a [B, 1, H, W] plane (t may be a float or a [B] tensor)."""
    b, _, h, w = like.shape
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)
    return t.expand(b, 1, h, w)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1))


class IFBlock(nn.Module):
    """One coarse-to-fine step of IFNet (RIFE): refines the flows and the mask at 1/scale."""

    def __init__(self, in_channels: int, channels: int, depth: int = 3):
        super().__init__()
        self.down = nn.Sequential(_conv(in_channels, channels // 2, 2), _conv(channels // 2, channels, 2))
        self.body = nn.Sequential(*[_conv(channels, channels) for _ in range(depth)])
        self.up = nn.ConvTranspose2d(channels, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, scale: int):
        if scale != 1:
            x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        feat = self.down(x)
        feat = self.body(feat) + feat
        out = F.interpolate(self.up(feat), scale_factor=2 * scale, mode="bilinear", align_corners=False)
        return out[:, :4] * (2 * scale), out[:, 4:5]


class IFNetLite(TemporalNet):
    """A compact learned M_T in the style of IFNet (RIFE): coarse-to-fine intermediate flows.

    Predicts the flows from time t to both inputs plus a visibility mask directly, with t
    as an input plane, then backward-warps and blends. Stateless: no cached grids.
    """

    size_multiple = 16
    traits = TemporalTraits(trainable=True, shares_flows=False, counted=True)

    def __init__(self, *, channels: tuple[int, ...] = (64, 48, 32), scales: tuple[int, ...] = (4, 2, 1),
                 depth: int = 3):
        super().__init__()
        if len(channels) != len(scales):
            raise ValueError("IFNetLite: channels and scales need the same length")
        self.scales = tuple(scales)
        self.size_multiple = max(16, 4 * max(scales))
        self.blocks = nn.ModuleList(
            [IFBlock(7 if i == 0 else 7 + 6 + 5, c, depth) for i, c in enumerate(channels)])

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.synthesize(I0, I1, t)[0]

    def synthesize(self, I0, I1, t=0.5):
        """Returns (frame, flow_t0, flow_t1, mask) so training and viewers can inspect them."""
        tm = _time_map(t, I0)
        base = torch.cat([I0, I1, tm], 1)
        flow = mask = None
        for i, (block, scale) in enumerate(zip(self.blocks, self.scales)):
            if i == 0:
                flow, mask = block(base, scale)
            else:
                w0 = backward_warp(I0, flow[:, :2])
                w1 = backward_warp(I1, flow[:, 2:])
                d_flow, d_mask = block(torch.cat([base, w0, w1, flow, mask], 1), scale)
                flow, mask = flow + d_flow, mask + d_mask
        m = torch.sigmoid(mask)
        w0 = backward_warp(I0, flow[:, :2])
        w1 = backward_warp(I1, flow[:, 2:])
        return m * w0 + (1 - m) * w1, flow[:, :2], flow[:, 2:], m


class DISInterp(TemporalNet):
    """Weight-free M_T on OpenCV's DIS optical flow: a fixed backbone, like the paper's "fixed" ones.

    Flows both ways on 8-bit luma, Super SloMo's intermediate-flow approximation at t, both
    frames backward-warped and blended by distance in time. No gradients flow through it.

    The flows are estimated once per pair (`estimate`) and reused for every t (`pair`).
    `high_res_flow="upsample"` reuses the low-res flows for the high-res frames too (upsampled
    and scaled) instead of running DIS again at 4x the pixels: stream S->T still warps at high
    resolution, but the costliest step of M_T runs once per pair.
    """

    size_multiple = 1
    traits = TemporalTraits(trainable=False, shares_flows=True, counted=False)
    PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, "dense": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    # preset "dense": medium with patches every 2 pixels instead of 3, twice the gradient-descent
    # iterations and 2 (not 5) variational refinements. On the large-motion dev sets it lifts the
    # stream S->T of stvsr-fast's M_S by 1.5 dB (vimeo_wide) and 0.4 dB (cockatoo_wide) for 1.5-1.8x
    # DIS's time; small motion is unchanged (tools/dis_presets.py, docs/MODELS.md)
    TUNING = {"dense": {"PatchStride": 2, "GradientDescentIterations": 50, "VariationalRefinementIterations": 2}}

    def __init__(self, *, preset: str = "medium", high_res_flow: str = "estimate"):
        super().__init__()
        if preset not in self.PRESETS:
            raise ValueError(f"DISInterp: preset must be one of {sorted(self.PRESETS)}, got {preset!r}")
        if high_res_flow not in ("estimate", "upsample"):
            raise ValueError(f"DISInterp: high_res_flow must be 'estimate' or 'upsample', got {high_res_flow!r}")
        self.preset, self.high_res_flow = preset, high_res_flow

    @staticmethod
    def _gray8(x: torch.Tensor) -> np.ndarray:
        y = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        return (y.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    def flows(self, I0: torch.Tensor, I1: torch.Tensor):
        """DIS flows 0->1 and 1->0 for each batch item, as float tensors on I0's device."""
        dis = cv2.DISOpticalFlow_create(self.PRESETS[self.preset])  # one per call: thread-safe
        for name, value in self.TUNING.get(self.preset, {}).items():
            getattr(dis, f"set{name}")(value)
        f01, f10 = [], []
        for a, b in zip(I0.detach().float(), I1.detach().float()):
            ga, gb = self._gray8(a), self._gray8(b)
            f01.append(torch.from_numpy(dis.calc(ga, gb, None)))
            f10.append(torch.from_numpy(dis.calc(gb, ga, None)))
        # contiguous [B, 2, H, W]: every later op on the flows (resizing, warping) is 2-3x slower
        # on the strided view that OpenCV's [H, W, 2] layout would leave
        to = lambda fs: torch.stack(fs).permute(0, 3, 1, 2).to(I0.device, torch.float32).contiguous()
        return to(f01), to(f10)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        """Flows are fixed (no gradient), but warping stays differentiable in the frames, so
        M_S still learns through the S->T stream when it is fine-tuned jointly."""
        with torch.no_grad():
            flows = self.flows(I0, I1)
        return self.synthesize(I0, I1, flows, t)

    @staticmethod
    def _time(t, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float32, device=like.device).reshape(-1, 1, 1, 1)

    @classmethod
    def _intermediate(cls, flows, t, like: torch.Tensor):
        """(ft0, ft1, t as [B, 1, 1, 1]): the flows from time t back to both frames (fixed)."""
        t_ = cls._time(t, like)
        with torch.no_grad():
            return (*intermediate_flows(*flows, t_), t_)

    @staticmethod
    def _warps(I0, I1, ft0, ft1):
        return backward_warp(I0.float(), ft0), backward_warp(I1.float(), ft1)

    @classmethod
    def _blend(cls, I0, I1, ft0, ft1, t_) -> torch.Tensor:
        w0, w1 = cls._warps(I0, I1, ft0, ft1)
        return torch.lerp(w0, w1, t_).to(I0.dtype)  # (1 - t) w0 + t w1, in one pass

    @classmethod
    def synthesize(cls, I0, I1, flows, t=0.5) -> torch.Tensor:
        """The frame at time t from both frames and their flows (f01, f10)."""
        return cls._blend(I0, I1, *cls._intermediate(flows, t, I0))

    def warp_error(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5, estimate=None) -> torch.Tensor:
        """[B, 1, H, W]: how much the two frames, warped to time t, disagree. Small where the
        flow holds (no occlusion, no failure): a per-pixel reliability map of DIS. `estimate`:
        this pair's `estimate` (I0, I1 being its low-res frames) when already made, else DIS runs here."""
        with torch.no_grad():
            flows = estimate[0] if estimate is not None else self.flows(I0, I1)
            ft0, ft1, _ = self._intermediate(flows, t, I0)
            w0, w1 = self._warps(I0, I1, ft0, ft1)
            return (w0 - w1).abs().mean(1, keepdim=True)

    @staticmethod
    def upsample_flows(flows, size):
        """Low-res flows resized to a high-res frame size, their vectors scaled to match."""
        s = size[-1] / flows[0].shape[-1]
        return tuple(s * F.interpolate(f, size=size[-2:], mode="bilinear", align_corners=False) for f in flows)

    def estimate(self, L0, L1, H0=None, H1=None):
        """(low-res flows, high-res flows or None): DIS once per pair, for every t."""
        high = H0 is not None and self.high_res_flow == "estimate"
        with torch.no_grad():
            return self.flows(L0, L1), self.flows(H0, H1) if high else None

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        """(L_mid, H_st): the in-between frame at low and at high resolution. With upsampled
        flows, the intermediate flows are formed at low resolution and only those two are
        resized (the same field: both steps are linear, at a quarter of the arithmetic)."""
        low, high = estimate or self.estimate(L0, L1, H0, H1)
        ft0, ft1, t_ = self._intermediate(low, t, L0)
        L_mid = self._blend(L0, L1, ft0, ft1, t_)
        if H0 is None:
            return L_mid, None
        if high is not None:
            return L_mid, self.synthesize(H0, H1, high, t)
        with torch.no_grad():
            up = self.upsample_flows((ft0, ft1), H0.shape)
        return L_mid, self._blend(H0, H1, *up, t_)


class DISRefine(TemporalNet):
    """DIS with a learned correction: DIS's bidirectional flows stay fixed (no gradient), a small
    CNN at half resolution learns what the weight-free blend lacks on large motion.

    From the frames, their DIS-warped versions and Super SloMo's intermediate flows at t
    (DISInterp's), the CNN predicts flow residuals (4 ch), a visibility logit (1 ch) and an RGB
    residual (3 ch). The frames are re-warped by the corrected flows and blended by visibility,
    then the residual is added. At initialisation (last conv zero, visibility logit biased to
    log((1-t)/t)) it is exactly DISInterp's blend. Differentiable in its learned parts (and in the
    frames), so stage 3 fine-tunes it jointly; the same CNN runs at both resolutions, its flows in
    its own (half-res) pixels. `estimate` is DIS's, once per pair for every t.
    """

    size_multiple = 1  # the CNN pads internally to its multiple: the model's frame multiple is unchanged
    traits = TemporalTraits(trainable=True, shares_flows=True, counted=False)
    _MULT = 4  # half resolution, then one stride-2 level

    def __init__(self, *, preset: str = "medium", high_res_flow: str = "upsample", channels: int = 32,
                 flow_scale: float = 4.0, splat: bool = False):
        super().__init__()
        self.dis = DISInterp(preset=preset, high_res_flow=high_res_flow)
        c = channels
        self.flow_scale, self.splat = float(flow_scale), bool(splat)
        # in: I0, I1, w0, w1 (12), ft0, ft1 (4, half-res pixels), |w0 - w1| (1), t (1); with
        # `splat`, also the forward-splatted flows' difference from ft0, ft1 (4) and their coverage (1)
        self.enc = nn.Sequential(_conv(18 + 5 * self.splat, c), _conv(c, c))
        self.down = nn.Sequential(_conv(c, c, 2), _conv(c, c), _conv(c, c))
        self.dec = nn.Sequential(_conv(2 * c, c), _conv(c, c))
        self.out = nn.Conv2d(c, 8, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def estimate(self, L0, L1, H0=None, H1=None):
        return self.dis.estimate(L0, L1, H0, H1)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN at half resolution; its output back at full resolution ([B, 8, H, W])."""
        h, w = x.shape[-2:]
        m = 2 * self._MULT
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        xh = F.interpolate(xp, scale_factor=0.5, mode="bilinear", align_corners=False)
        e = self.enc(xh)
        d = self.down(e)
        d = F.interpolate(d, size=e.shape[-2:], mode="bilinear", align_corners=False)
        o = self.out(self.dec(torch.cat([e, d], 1)))
        o = F.interpolate(o, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        return o[..., :h, :w]

    def _intermediate(self, flows, t, I0, I1):
        """(ft0, ft1, extra or None, t as [B, 1, 1, 1]): DISInterp's intermediate flows; with
        `splat`, extra = the softmax-splatted flows minus those (4 ch) and the splat coverage (1 ch)."""
        ft0, ft1, t_ = DISInterp._intermediate(flows, t, I0)
        if not self.splat:
            return ft0, ft1, None, t_
        with torch.no_grad():
            f01, f10 = flows
            e0, e1 = flow_errors(I0, I1, f01, f10)
            s0, s1, cover = splatted_intermediate_flows(f01, f10, t_, torch.exp(-20 * e0), torch.exp(-20 * e1))
            return ft0, ft1, torch.cat([s0 - ft0, s1 - ft1, cover], 1), t_

    @staticmethod
    def _upsample_extra(extra, size):
        if extra is None:
            return None
        s = size[-1] / extra.shape[-1]
        up = F.interpolate(extra, size=size[-2:], mode="bilinear", align_corners=False)
        return torch.cat([s * up[:, :4], up[:, 4:]], 1)

    def refine(self, I0, I1, ft0, ft1, t_, extra=None) -> torch.Tensor:
        """The frame at t from both frames and the (fixed) intermediate flows ft0, ft1 at full res."""
        dtype = I0.dtype
        I0, I1 = I0.float(), I1.float()
        ft0, ft1 = ft0.float(), ft1.float()
        w0, w1 = backward_warp(I0, ft0), backward_warp(I1, ft1)
        tm = t_.float().expand(I0.shape[0], 1, *I0.shape[-2:])
        x = [I0, I1, w0, w1, 0.5 * ft0, 0.5 * ft1, (w0 - w1).abs().mean(1, keepdim=True), tm]
        if self.splat:
            x += [0.5 * extra[:, :4].float(), extra[:, 4:].float()]
        x = torch.cat(x, 1)
        p = self.out.weight
        o = self._head(x.to(p.dtype)).float()
        d_flow, d_vis, res = o[:, :4] * self.flow_scale, o[:, 4:5], o[:, 5:8]
        w0r, w1r = backward_warp(I0, ft0 + d_flow[:, :2]), backward_warp(I1, ft1 + d_flow[:, 2:])
        tc = t_.float().clamp(1e-4, 1 - 1e-4)
        vis = torch.sigmoid(torch.log((1 - tc) / tc) + d_vis)  # = 1 - t at init: DIS's blend weights
        return (vis * w0r + (1 - vis) * w1r + res).to(dtype)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        with torch.no_grad():
            flows = self.dis.flows(I0, I1)
        ft0, ft1, extra, t_ = self._intermediate(flows, t, I0, I1)
        return self.refine(I0, I1, ft0, ft1, t_, extra)

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        """(L_mid, H_st) as DISInterp.pair makes them, each through the learned correction."""
        low, high = estimate or self.estimate(L0, L1, H0, H1)
        ft0, ft1, extra, t_ = self._intermediate(low, t, L0, L1)
        L_mid = self.refine(L0, L1, ft0, ft1, t_, extra)
        if H0 is None:
            return L_mid, None
        if high is not None:
            hf0, hf1, h_extra, _ = self._intermediate(high, t, H0, H1)
        else:
            with torch.no_grad():
                hf0, hf1 = DISInterp.upsample_flows((ft0, ft1), H0.shape)
                h_extra = self._upsample_extra(extra, H0.shape)
        return L_mid, self.refine(H0, H1, hf0, hf1, t_, h_extra)


# "rife": pretrained, its weights come from the backbone store (stvsr fetch-backbones)
from .dis_occlusion import DISOcclusion  # noqa: E402  (it builds on DISInterp, above)

TEMPORAL = {"ifnet_lite": IFNetLite, "dis": DISInterp, "dis_refine": DISRefine, "dis_occlusion": DISOcclusion,
            "rife": RifeMT, "per_resolution": PerResolutionMT}
