"""DISOcclusion: M_T on DIS that chooses, per pixel, which flow and which frame to trust.

DIS's plain blend (DISInterp) warps both frames along Super SloMo's linear intermediate flows
and mixes them by nearness in time. Two things go wrong on large motion: where a region is
hidden in one frame, that frame's warp is wrong but still gets half the weight; and the linear
approximation reads the flow at the wrong place at moving edges, where the DIS flows
forward-splatted to t (warp.splatted_intermediate_flows) are right. On the dev sets the
per-pixel best of the four warps is 1.6-3.6 dB above DIS's blend while no fixed blend gains
0.1 dB: the choice must be made per pixel.

Each frame's linear and splatted flows are candidates, weighted by nearness in time and by an
occlusion test: a candidate is down-weighted where the *other* frame's DIS error (that frame
warped onto this one, carried to t) is over `ratio` times its own frame's. That content is not
in this frame. Where both errors are high, DIS's flow failed rather than an occlusion, and the
weights stay even. Each frame's flow is then its candidates mixed by their weights, and the
frames are blended by their summed weights: two warps per resolution, as DIS's own blend.

Weight-free, from the low-res frames once per t; the same flows (upsampled) and weights blend
the high-res frames (stream S->T). A learned correction of the weights (a CNN, trained in stage
1) lost to this test on every dev set, as did DISRefine's learned flow residuals (docs/MODELS.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .temporal import DISInterp
from .warp import backward_warp, flow_errors, intermediate_flows, splatted_intermediate_flows


class DISOcclusion(DISInterp):
    """DIS's estimate (once per pair), then an occlusion-aware choice of flow and frame per pixel."""

    def __init__(self, *, preset: str = "dense", high_res_flow: str = "upsample", occlusion: float = 40.0,
                 ratio: float = 4.0):
        if high_res_flow != "upsample":
            raise ValueError("DISOcclusion: high_res_flow must be 'upsample' (its choice is made on the low-res frames)")
        super().__init__(preset=preset, high_res_flow=high_res_flow)
        self.occlusion, self.ratio = float(occlusion), float(ratio)

    @staticmethod
    def candidates(flows, t_, L0, L1):
        """The four candidate flows at t ([B, 8, h, w]: linear t->0, t->1, then splatted t->0, t->1)
        and each one's own frame's DIS error carried to t along it ([B, 4, h, w]).

        Splatting runs at half the low resolution: the same dev-set quality (+-0.06 dB) at a
        quarter of its cost, the costliest step here."""
        f01, f10 = flows
        e0, e1 = flow_errors(L0, L1, f01, f10)
        half = lambda x: F.avg_pool2d(x, 2, ceil_mode=True)
        s0, s1, _ = splatted_intermediate_flows(half(f01) / 2, half(f10) / 2, t_,
                                                torch.exp(-20 * half(e0)), torch.exp(-20 * half(e1)))
        full = lambda f: 2 * F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)[..., :f01.shape[-2], :f01.shape[-1]]
        flows_t = [*intermediate_flows(f01, f10, t_), full(s0), full(s1)]
        errs = torch.cat([backward_warp(e, f) for e, f in zip([e0, e1] * 2, flows_t)], 1)
        return torch.cat(flows_t, 1), errs

    def weights(self, errs, t_) -> torch.Tensor:
        """[B, 4, h, w] softmax weights of the candidates: each frame by its nearness in time, the
        linear and splatted flows alike, less the occlusion test's penalty."""
        tc = t_.float().clamp(1e-4, 1 - 1e-4).reshape(-1, 1, 1, 1)
        prior = (torch.cat([1 - tc, tc, 1 - tc, tc], 1) / 2).log()
        other = errs[:, [1, 0, 3, 2]]
        return torch.softmax(prior - self.occlusion * (other - self.ratio * errs).clamp_min(0), 1)

    def choice(self, flows, t, L0, L1):
        """(ft0, ft1, w0) at low resolution: each frame's flow to t, its candidates mixed by their
        weights, and frame 0's share of the blend (frame 1's is 1 - w0). Fixed (no gradient)."""
        with torch.no_grad():
            t_ = self._time(t, L0)
            flows_t, errs = self.candidates(flows, t_, L0, L1)
            W = self.weights(errs, t_)
            a0, a1, s0, s1 = flows_t.split(2, 1)
            w0, w1 = W[:, 0:1] + W[:, 2:3], W[:, 1:2] + W[:, 3:4]
            ft0 = (W[:, 0:1] * a0 + W[:, 2:3] * s0) / w0.clamp_min(1e-8)
            ft1 = (W[:, 1:2] * a1 + W[:, 3:4] * s1) / w1.clamp_min(1e-8)
            return ft0, ft1, w0

    @staticmethod
    def _mix(I0, I1, ft0, ft1, w0) -> torch.Tensor:
        """Differentiable in the frames (stage 3 trains M_S through stream S->T)."""
        w0r, w1r = backward_warp(I0.float(), ft0), backward_warp(I1.float(), ft1)
        return (w0 * w0r + (1 - w0) * w1r).to(I0.dtype)

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        low, _ = estimate or self.estimate(L0, L1)
        ft0, ft1, w0 = self.choice(low, t, L0, L1)
        L_mid = self._mix(L0, L1, ft0, ft1, w0)
        if H0 is None:
            return L_mid, None
        with torch.no_grad():
            up0, up1 = self.upsample_flows((ft0, ft1), H0.shape)
            w0_hr = F.interpolate(w0, size=H0.shape[-2:], mode="bilinear", align_corners=False)
        return L_mid, self._mix(H0, H1, up0, up1, w0_hr)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.pair(I0, I1, None, None, t)[0]
