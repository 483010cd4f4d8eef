"""The Dual-Stream Fusion Network (Fig. 1): one definition for training, evaluation and the hosts."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from .fusion import build_fusion
from .refine import build_refine
from .spatial import SPATIAL
from .temporal import TEMPORAL
from .tiling import pad_to_multiple

DEFAULT_CONFIG = {
    "scale": 2,
    "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
    "temporal": {"arch": "dis", "preset": "medium"},
    "fusion": {"preset": "lite", "masks": 2},
    "refine": {"preset": "lite"},
}


@dataclass
class Middle:
    """Everything the paper names for the in-between frame t (Sec. 3.1-3.3)."""

    L_mid: torch.Tensor   # \hat L^(t) = M_T(L^(t-1), L^(t+1))
    H_st: torch.Tensor    # stream S->T: M_T(\hat H^(t-1), \hat H^(t+1))
    H_ts: torch.Tensor    # stream T->S: M_S(\hat L^(t))
    M_st: torch.Tensor    # blending mask of H_st, [B, 1, H, W]
    M_ts: torch.Tensor    # blending mask of H_ts
    H_F: torch.Tensor     # fused: M_st * H_st + M_ts * H_ts (Eq. 9)
    H_R: torch.Tensor     # refined: R(H_F) + H_F (Eq. 10)


@dataclass
class Outputs(Middle):
    H_prev: torch.Tensor  # \hat H^(t-1) = M_S(L^(t-1))
    H_next: torch.Tensor  # \hat H^(t+1) = M_S(L^(t+1))


def _build(table: dict, cfg: dict, what: str, **extra) -> nn.Module:
    cfg = dict(cfg)
    arch = cfg.pop("arch", None)
    if arch not in table:
        raise ValueError(f"unknown {what} architecture {arch!r}: choose one of {sorted(table)}")
    return table[arch](**cfg, **extra)


def _lr_multiple(m: int, scale: int) -> int:
    """Smallest low-res multiple k such that k * scale is a multiple of m."""
    return m // math.gcd(m, scale)


class DualStream(nn.Module):
    """M_S, M_T, F and R composed as in the paper. Any M_S and M_T can be swapped in.

    The methods split the work the way an engine needs it: `spatial` once per input frame,
    `middle` once per pair, reusing both frames' spatial outputs.
    """

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = copy.deepcopy(config or DEFAULT_CONFIG)
        self.scale = int(self.config["scale"])
        self.M_S = _build(SPATIAL, self.config["spatial"], "spatial", scale=self.scale)
        self.M_T = _build(TEMPORAL, self.config["temporal"], "temporal")
        self.F = build_fusion(self.config.get("fusion", {}))
        # F is StreamST: stream T->S is never computed (H_ts is H_st). Kept here, since backends
        # may swap F for a compiled module
        self.single_stream = bool(self.F.single_stream)
        self._dis = TEMPORAL["dis"]() if self.F.needs_cue else None  # weight-free: F's cue
        self.R = build_refine(self.config.get("refine", {}))
        self.size_multiple = self._multiples()  # of the low-res frames

    def _multiples(self) -> int:
        """The low-res size multiple the backbones need. F and R pad their own inputs (fuse,
        refine), so M_S and M_T see the frame's real borders, not replicated padding."""
        return math.lcm(self.M_S.size_multiple, self.M_T.size_multiple,
                        _lr_multiple(self.M_T.size_multiple, self.scale))

    def pretrained_parts(self) -> dict[str, str]:
        """{part: backbone name} of the sub-networks whose weights come from the backbone store."""
        return {name: m.pretrained for name, m in (("M_S", self.M_S), ("M_T", self.M_T))
                if getattr(m, "pretrained", None)}

    def with_spatial(self, M_S: nn.Module) -> "DualStream":
        """A copy that uses another M_S (e.g. the user's own upscaler), sharing M_T, F and R."""
        if getattr(M_S, "scale", self.scale) != self.scale:
            raise ValueError(f"the upscaler is x{M_S.scale} but this model's F and R work at x{self.scale}: "
                             f"pick an x{self.scale} upscale model")
        other = copy.copy(self)
        other._modules = dict(self._modules)
        other._modules["M_S"] = M_S
        other.config = {**self.config, "spatial": {"arch": "external", "name": getattr(M_S, "name", "")}}
        other.size_multiple = other._multiples()
        return other

    def spatial(self, L: torch.Tensor) -> torch.Tensor:
        return self.M_S(L)

    @property
    def needs_cue(self) -> bool:
        """True when F reads the low-res frames too (through `cue`), not only the two streams."""
        return self._dis is not None

    def cue(self, L0: torch.Tensor, L1: torch.Tensor, t=0.5) -> torch.Tensor | None:
        """F's extra input when its config asks for one (`inputs: streams+dis_error`): DIS's warp
        error at low resolution, upsampled to the output size; None for the paper's F."""
        if self._dis is None:
            return None
        e = self._dis.warp_error(L0, L1, t)
        return torch.nn.functional.interpolate(e, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def fuse(self, H_st: torch.Tensor, H_ts: torch.Tensor, cue: torch.Tensor | None = None):
        """Returns (M_st, M_ts, H_F)."""
        if self.single_stream:
            return (*self.F(H_st), H_st)
        h, w = H_st.shape[-2:]
        # a compiled F (torch-compile, OpenVINO) takes tensors only: no None for a missing cue
        inputs = [pad_to_multiple(x, self.F.size_multiple) for x in (H_st, H_ts, cue) if x is not None]
        M_st, M_ts = (m[..., :h, :w] for m in self.F(*inputs))
        return M_st, M_ts, M_st * H_st + M_ts * H_ts

    def interpolators(self):
        """(the M_T that makes L_mid, the M_T that makes H_st): the same network, unless M_T is
        one per resolution (PerResolutionMT). For timing and FLOP counts of each step."""
        return getattr(self.M_T, "low", self.M_T), getattr(self.M_T, "high", self.M_T)

    def interpolate(self, L0, L1, H0, H1, t=0.5):
        """The two M_T calls: L_mid (for stream T->S) and H_st (stream S->T). Flow-based M_T needs
        the whole frame to follow large motion, so engines never tile this step. An M_T with a
        `pair` method may share work between the two (DIS reusing its low-res flows)."""
        if hasattr(self.M_T, "pair"):
            return self.M_T.pair(L0, L1, H0, H1, t)
        return self.M_T(L0, L1, t), self.M_T(H0, H1, t)

    def refine(self, H_F: torch.Tensor) -> torch.Tensor:
        h, w = H_F.shape[-2:]
        return self.R(pad_to_multiple(H_F, self.R.size_multiple))[..., :h, :w]

    def streams(self, L0, L1, H0, H1, t=0.5):
        """(L_mid, H_st, H_ts): both streams, composed once for inference and training alike."""
        L_mid, H_st = self.interpolate(L0, L1, H0, H1, t)
        return L_mid, H_st, H_st if self.single_stream else self.spatial(L_mid)

    def middle(self, L0, L1, H0, H1, t=0.5) -> Middle:
        """The in-between frame from both low-res frames and their spatial outputs."""
        L_mid, H_st, H_ts = self.streams(L0, L1, H0, H1, t)
        M_st, M_ts, H_F = self.fuse(H_st, H_ts, self.cue(L0, L1, t))
        return Middle(L_mid, H_st, H_ts, M_st, M_ts, H_F, self.refine(H_F))

    def forward(self, L0: torch.Tensor, L1: torch.Tensor, t=0.5) -> Outputs:
        H0, H1 = self.M_S(L0), self.M_S(L1)
        mid = self.middle(L0, L1, H0, H1, t)
        return Outputs(**{f.name: getattr(mid, f.name) for f in fields(Middle)}, H_prev=H0, H_next=H1)
