"""What a model can do, declared once: hosts, the engine, training and the bench read this
instead of sniffing attributes of its sub-networks."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TemporalTraits:
    """Declared by every M_T class."""

    trainable: bool      # learned weights that stage 1 trains (a pretrained or weight-free one: False)
    shares_flows: bool   # `estimate` once per pair, then any number of t reuse it (DIS)
    counted: bool        # its work is torch ops that FlopCounterMode sees (DIS runs in OpenCV: False)


class TemporalNet(torch.nn.Module):
    """The interface of M_T: `estimate` once per pair, `pair` for each t. An M_T without work to
    share returns no estimate and runs itself at both resolutions."""

    traits = TemporalTraits(trainable=False, shares_flows=False, counted=True)
    size_multiple = 1

    def estimate(self, L0, L1, H0=None, H1=None):
        """Whatever the pair's frames give for every t (flows), or None."""
        return None

    def pair(self, L0, L1, H0, H1, t=0.5, estimate=None):
        """(L_mid, H_st): the frame at t at low resolution, and at high resolution (None when no
        high-res frames are given: temporal-only output)."""
        return self(L0, L1, t), None if H0 is None else self(H0, H1, t)


@dataclass(frozen=True)
class ModelInfo:
    """A DualStream model's capabilities (DualStream.info)."""

    scale: int                      # the upscaling factor of M_S (and of F, R's frame size)
    size_multiple: int              # low-res frames are padded to this
    precisions: tuple[str, ...]     # what it may run in: fp32 always, bf16 and fp16 where the device has them
    trainable: tuple[str, ...]      # the parts that learn in stages 1-3 (pretrained backbones stay frozen)
    tileable: tuple[str, ...]       # steps that may run on overlapping tiles (M_T never: motion crosses tiles)
    shares_flows: bool              # M_T estimates once per pair for any number of in-between times
    single_stream: bool             # F is pass-through S->T: stream T->S is never computed
    needs_cue: bool                 # F also reads the low-res frames (the DIS warp-error cue)
    refines: bool                   # R runs (False: H_R = H_F, NoRefine)
    pretrained: dict                # {part: backbone name} of weights from the backbone store
