"""PSNR and SSIM as the evaluation protocol scores them: RGB, 8-bit, full frame (kornia)."""
from __future__ import annotations

import torch
from kornia.metrics import psnr as _psnr
from kornia.metrics import ssim as _ssim


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits, as a saved frame would be."""
    return (x.clamp(0, 1) * 255).round() / 255


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(_psnr(quantize(pred), quantize(target), 1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Gaussian 11x11 window (sigma 1.5), averaged over the RGB channels and the frame."""
    return float(_ssim(quantize(pred)[None] if pred.ndim == 3 else quantize(pred),
                       quantize(target)[None] if target.ndim == 3 else quantize(target), 11).mean())


def temporal_change_error(frames: list[torch.Tensor], truth: list[torch.Tensor]) -> float:
    """Temporal consistency: mean absolute difference (8-bit levels) between the output's and the
    ground truth's frame-to-frame change. Flicker and jumps raise it; 0 is a perfect match."""
    f, g = [quantize(x) for x in frames], [quantize(x) for x in truth]
    errs = [((f[i + 1] - f[i]) - (g[i + 1] - g[i])).abs().mean() for i in range(len(f) - 1)]
    return float(torch.stack(errs).mean() * 255)
