"""M_T on DIS that chooses, per pixel, which warp to trust: weight-free (DISOcclusion) or learned (DISSelect).

Each frame is warped to time t along Super SloMo's linear intermediate flows and, with `splat`,
also along the forward-splatted DIS flows (warp.splatted_intermediate_flows): two or four
candidates. Where a region is hidden in one frame, only the other frame's warp is right; DIS's
plain blend mixes in the wrong one. On the dev sets the per-pixel best candidate is 1.6-3.6 dB
above DIS's blend while no fixed blend gains 0.1 dB: the choice must be made per pixel.

DISOcclusion makes it with a test: a warp is down-weighted where the *other* frame's DIS error
(its frame warped onto this one's, carried to t) is over `ratio` times this frame's own. That
content is not in this frame. Where both errors are high, DIS's flow failed rather than an
occlusion, and the blend stays even. The weights come from the low-res frames and, upsampled,
blend the high-res candidates too (stream S->T).

DISSelect adds a small CNN that learns corrections to those weights. It was trained and lost to
its own weight-free prior on every dev set (docs/MODELS.md), so no shipped model uses it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .descriptor import TemporalTraits
from .temporal import DISInterp, _conv
from .warp import backward_warp, intermediate_flows, splatted_intermediate_flows


class DISOcclusion(DISInterp):
    """DIS's estimate (once per pair) and a weight-free, occlusion-aware choice between warps."""

    def __init__(self, *, preset: str = "dense", high_res_flow: str = "upsample", splat: bool = True,
                 occlusion: float = 40.0, ratio: float = 4.0):
        if high_res_flow != "upsample":
            raise ValueError(f"{type(self).__name__}: high_res_flow must be 'upsample' "
                             f"(its weights come from the low-res frames)")
        super().__init__(preset=preset, high_res_flow=high_res_flow)
        self.splat, self.occlusion, self.ratio = bool(splat), float(occlusion), float(ratio)
        self.n = 4 if self.splat else 2  # candidates: I0, I1 along the linear flows (then the splatted)

    # -- the candidates ------------------------------------------------------------------------
    def _flows_at(self, flows, t_, L0, L1):
        """The candidates' intermediate flows at t ([B, 2n, h, w]: t->0, t->1 for the linear flows,
        then the splatted ones), the splat coverage (or None) and each candidate's own frame's DIS
        error carried to t along its flow ([B, n, h, w]); fixed (no gradient)."""
        with torch.no_grad():
            f01, f10 = flows
            L0, L1 = L0.float(), L1.float()
            e0 = (L0 - backward_warp(L1, f01)).abs().mean(1, keepdim=True)
            e1 = (L1 - backward_warp(L0, f10)).abs().mean(1, keepdim=True)
            flows_t = list(intermediate_flows(f01, f10, t_))
            cover = None
            if self.splat:
                s0, s1, cover = splatted_intermediate_flows(f01, f10, t_, torch.exp(-20 * e0), torch.exp(-20 * e1))
                flows_t += [s0, s1]
            errs = torch.cat([backward_warp(e, f) for e, f in zip([e0, e1] * 2, flows_t)], 1)
            return torch.cat(flows_t, 1), cover, errs

    @staticmethod
    def candidates(I0, I1, flows_t) -> torch.Tensor:
        """[B, n, 3, H, W]: I0 and I1 warped along each pair of flows in flows_t ([B, 2n, H, W])."""
        I0, I1 = I0.float(), I1.float()
        fs = flows_t.split(2, 1)
        return torch.stack([backward_warp(I0 if i % 2 == 0 else I1, f) for i, f in enumerate(fs)], 1)

    # -- the choice ----------------------------------------------------------------------------
    def prior(self, errs, t_) -> torch.Tensor:
        """[B, n, h, w] log weights: each frame by its nearness in time, the linear and splatted
        candidates alike, minus the occlusion test's penalty."""
        tc = t_.float().clamp(1e-4, 1 - 1e-4).reshape(-1, 1, 1, 1)
        log_w = (torch.cat([1 - tc, tc] * (self.n // 2), 1) / (self.n // 2)).log()
        other = errs.reshape(errs.shape[0], -1, 2, *errs.shape[-2:]).flip(2).flatten(1, 2)
        return log_w - self.occlusion * (other - self.ratio * errs).clamp_min(0)

    def weights(self, C: torch.Tensor, cover, errs, t_) -> torch.Tensor:
        """[B, n, h, w] weights over the low-res candidates C ([B, n, 3, h, w]), summing to 1."""
        return torch.softmax(self.prior(errs, t_), 1)

    @staticmethod
    def blend(C: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return (C * W.unsqueeze(2)).sum(1)

    # -- M_T's interface -----------------------------------------------------------------------
    def parts(self, L0, L1, H0, H1, t=0.5, estimate=None):
        """(low-res candidates, weights; high-res candidates, weights, or None twice without
        high-res frames): what `pair` blends, and what training scores (`task_loss`)."""
        low, _ = estimate or self.estimate(L0, L1)
        t_ = self._time(t, L0)
        flows_t, cover, errs = self._flows_at(low, t_, L0, L1)
        C = self.candidates(L0, L1, flows_t)
        W = self.weights(C, cover, errs, t_)
        if H0 is None:
            return C, W, None, None
        with torch.no_grad():
            up = torch.cat(self.upsample_flows(flows_t.split(2, 1), H0.shape), 1)
        W_hr = F.interpolate(W, size=H0.shape[-2:], mode="bilinear", align_corners=False)
        return C, W, self.candidates(H0, H1, up), W_hr

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        C, W, C_hr, W_hr = self.parts(L0, L1, H0, H1, t, estimate)
        L_mid = self.blend(C, W).to(L0.dtype)
        return L_mid, None if H0 is None else self.blend(C_hr, W_hr).to(H0.dtype)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.pair(I0, I1, None, None, t)[0]


class DISSelect(DISOcclusion):
    """DISOcclusion plus a learned correction of its weights: a small CNN at half the low
    resolution reads the candidates, where they disagree, the carried DIS errors, the splat
    coverage and t. Zero last layer: at initialisation it is DISOcclusion. Differentiable in its
    weights and in the frames, so stage 3 fine-tunes it jointly with M_S."""

    traits = TemporalTraits(trainable=True, shares_flows=True, counted=False)
    _MULT = 4  # half resolution, then one stride-2 level

    def __init__(self, *, preset: str = "dense", high_res_flow: str = "upsample", channels: int = 24,
                 occlusion: float = 40.0, ratio: float = 4.0, choice_loss: float = 0.0):
        super().__init__(preset=preset, high_res_flow=high_res_flow, splat=True, occlusion=occlusion, ratio=ratio)
        self.choice_loss = float(choice_loss)
        c, features = channels, 12 + 4 + 4 + 2  # candidates, their disagreements, errors, coverage and t
        self.enc = nn.Sequential(_conv(features, c, 2), _conv(c, c))
        self.down = nn.Sequential(_conv(c, c + 8, 2), _conv(c + 8, c + 8))
        self.dec = _conv(2 * c + 8, c)
        self.out = nn.Conv2d(c, 4, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def weights(self, C: torch.Tensor, cover, errs, t_) -> torch.Tensor:
        b, _, _, h, w = C.shape
        dis = lambda i, j: (C[:, i] - C[:, j]).abs().mean(1, keepdim=True)
        tm = t_.float().reshape(-1, 1, 1, 1).expand(b, 1, h, w)
        x = torch.cat([C.flatten(1, 2), dis(0, 1), dis(2, 3), dis(0, 2), dis(1, 3), 4 * errs, cover, tm], 1)
        m = 2 * self._MULT
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        e = self.enc(xp.to(self.out.weight.dtype))
        d = F.interpolate(self.down(e), size=e.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.out(self.dec(torch.cat([e, d], 1))).float()
        logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
        return torch.softmax(logits + self.prior(errs, t_), 1)

    def task_loss(self, L0, L1, H0, H1, Lt, Ht, t) -> torch.Tensor:
        """Stage 1: L1 of both blends; with `choice_loss`, plus that times each candidate's L1
        error weighted by its weight (the choice's expected error), which tells every weight
        directly which warp was right. That term made the CNN choose hard and wrongly where it
        cannot tell (docs/MODELS.md)."""
        C, W, C_hr, W_hr = self.parts(L0, L1, H0, H1, t)
        loss = 0
        for C_, W_, target in ((C, W, Lt), (C_hr, W_hr, Ht)):
            loss = loss + F.l1_loss(self.blend(C_, W_), target.float())
            if self.choice_loss:
                err = (C_ - target.float().unsqueeze(1)).abs().mean(2)  # [B, 4, H, W]
                loss = loss + self.choice_loss * (W_ * err).sum(1).mean()
        return loss
