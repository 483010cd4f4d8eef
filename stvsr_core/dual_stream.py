"""The Dual-Stream Fusion Network (Fig. 1): one definition for training, evaluation and the hosts."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields

import torch
from torch import nn

from .descriptor import ModelInfo
from .fusion import build_fusion
from .refine import build_refine
from .runner import DIRECT, TILEABLE, Runner
from .spatial import SPATIAL
from .temporal import TEMPORAL, DISInterp
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
    `estimate` once per pair, `middle` once per in-between time t, reusing both frames' spatial
    outputs. Every step goes through a runner, which tiles, casts, times or counts it.
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
        # F's cue is DIS's warp error. A DIS M_T (or a per-resolution M_T's low-res DIS) gives it
        # its own flows (no second estimate per pair); another M_T gets a weight-free DIS of its
        # own. Kept as a plain bool, like single_stream, for a compiled F
        self._needs_cue = bool(self.F.needs_cue)
        low = self.interpolators()[0]
        self._cue_dis = TEMPORAL["dis"]() if self._needs_cue and not isinstance(low, DISInterp) else None
        self.R = build_refine(self.config.get("refine", {}))
        self.refines = not self.R.identity  # False: H_R = H_F (NoRefine); a plain bool, as above
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

    @property
    def info(self) -> ModelInfo:
        """What this model can do (descriptor.ModelInfo), for the engine, the hosts and training."""
        parts = self.pretrained_parts()
        learns = [n for n, m in (("M_S", self.M_S), ("F", self.F), ("R", self.R))
                  if n not in parts and any(True for _ in m.parameters())]
        if self.M_T.traits.trainable and "M_T" not in parts:
            learns.insert(1, "M_T")
        return ModelInfo(scale=self.scale, size_multiple=self.size_multiple, precisions=("fp32", "bf16", "fp16"),
                         trainable=tuple(learns), tileable=TILEABLE, shares_flows=self.M_T.traits.shares_flows,
                         single_stream=self.single_stream, needs_cue=self.needs_cue, refines=self.refines,
                         pretrained=parts)

    # -- the steps of Fig. 1; `run` decides how each runs (runner.Runner) ----------------------------
    def spatial(self, L: torch.Tensor, run: Runner = DIRECT, step: str = "M_S") -> torch.Tensor:
        """M_S (Eq. 1); step "M_S (T->S)" when it upsamples the low-res in-between frame."""
        return run.tiled(step, lambda lr, hr: [self.M_S(lr[0])], [L], [])[0]

    @property
    def needs_cue(self) -> bool:
        """True when F reads the low-res frames too (through `cue`), not only the two streams."""
        return self._needs_cue

    def cue(self, L0: torch.Tensor, L1: torch.Tensor, t=0.5, run: Runner = DIRECT, estimate=None) -> torch.Tensor | None:
        """F's extra input when its config asks for one (`inputs: streams+dis_error`): DIS's warp
        error at low resolution, upsampled to the output size; None for the paper's F. With a DIS
        M_T, `estimate` (its flows for this pair) is reused; the result is the same without it."""
        if not self._needs_cue:
            return None
        dis = self.M_T if self._cue_dis is None else self._cue_dis
        own = estimate if dis is self.M_T else None  # another M_T's estimate is not DIS's

        def error(L0, L1):
            e = dis.warp_error(L0, L1, t, own)
            return torch.nn.functional.interpolate(e, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return run.whole("cue", error, L0, L1)

    def fuse(self, H_st: torch.Tensor, H_ts: torch.Tensor, cue: torch.Tensor | None = None, run: Runner = DIRECT):
        """F (Eq. 9): returns (M_st, M_ts, H_F)."""
        if self.single_stream:
            return (*self.F(H_st), H_st)

        def fuse(lr, hr):
            h, w = hr[0].shape[-2:]
            # a compiled F (torch-compile, OpenVINO) takes tensors only: no None for a missing cue
            M_st, M_ts = (m[..., :h, :w] for m in self.F(*(pad_to_multiple(x, self.F.size_multiple) for x in hr)))
            return [M_st, M_ts, M_st * hr[0] + M_ts * hr[1]]
        inputs = [x for x in (H_st, H_ts, cue) if x is not None]
        return tuple(run.tiled("F", fuse, [self._grid(H_st)], inputs))

    def interpolators(self):
        """(the M_T that makes L_mid, the M_T that makes H_st): the same network, unless M_T is
        one per resolution (PerResolutionMT). For FLOP counts of each."""
        return getattr(self.M_T, "low", self.M_T), getattr(self.M_T, "high", self.M_T)

    def estimate(self, L0, L1, H0=None, H1=None, run: Runner = DIRECT):
        """M_T's work shared by every t of a pair (DIS flows), or None; computed once per pair."""
        return run.whole("M_T estimate", self.M_T.estimate, L0, L1, H0, H1)

    def interpolate(self, L0, L1, H0, H1, t=0.5, estimate=None, run: Runner = DIRECT):
        """The two M_T calls (Eq. 2): L_mid (for stream T->S) and H_st (stream S->T). Flow-based
        M_T needs the whole frame to follow large motion, so it is never tiled."""
        if estimate is None:
            estimate = self.estimate(L0, L1, H0, H1, run)
        return run.whole("M_T", self.M_T.pair, L0, L1, H0, H1, t, estimate)

    def refine(self, H_F: torch.Tensor, run: Runner = DIRECT) -> torch.Tensor:
        """R (Eq. 10): H_R = R(H_F) + H_F."""
        if not self.refines:
            return H_F

        def refine(lr, hr):
            h, w = hr[0].shape[-2:]
            return [self.R(pad_to_multiple(hr[0], self.R.size_multiple))[..., :h, :w]]
        return run.tiled("R", refine, [self._grid(H_F)], [H_F])[0]

    def _grid(self, H: torch.Tensor) -> torch.Tensor:
        """The low-res grid a high-res frame's tiles are laid on."""
        return H[..., ::self.scale, ::self.scale]

    def streams(self, L0, L1, H0, H1, t=0.5, estimate=None, run: Runner = DIRECT):
        """(L_mid, H_st, H_ts): both streams, composed once for inference and training alike."""
        L_mid, H_st = self.interpolate(L0, L1, H0, H1, t, estimate, run)
        return L_mid, H_st, H_st if self.single_stream else self.spatial(L_mid, run, "M_S (T->S)")

    def middle(self, L0, L1, H0, H1, t=0.5, estimate=None, run: Runner = DIRECT) -> Middle:
        """The in-between frame at t from both low-res frames and their spatial outputs: the one
        composition of Fig. 1 that the engine, training, the bench and the FLOP count all run."""
        if estimate is None:
            estimate = self.estimate(L0, L1, H0, H1, run)
        L_mid, H_st, H_ts = self.streams(L0, L1, H0, H1, t, estimate, run)
        M_st, M_ts, H_F = self.fuse(H_st, H_ts, self.cue(L0, L1, t, run, estimate), run)
        return Middle(L_mid, H_st, H_ts, M_st, M_ts, H_F, self.refine(H_F, run))

    def forward(self, L0: torch.Tensor, L1: torch.Tensor, t=0.5, run: Runner = DIRECT) -> Outputs:
        H0, H1 = self.spatial(L0, run), self.spatial(L1, run)
        mid = self.middle(L0, L1, H0, H1, t, run=run)
        return Outputs(**{f.name: getattr(mid, f.name) for f in fields(Middle)}, H_prev=H0, H_next=H1)
