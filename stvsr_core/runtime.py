"""Where and how the networks run, checked in one place for the CLI, the nodes and the filter:
a device, one precision (auto, fp32, bf16, fp16) and a backend."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .backends import BACKENDS
from .precision import cpu_prefers_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class InputError(ValueError):
    """Frames or settings the engine cannot process (wrong shape, size change, NaN, too few,
    a device or precision this machine lacks)."""


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available: pick device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} requested but MPS is not available: pick device cpu or auto")
    return dev


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str   # fp32, bf16 or fp16: what "auto" resolved to
    backend: str

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self):
        """Convolutions in the reduced precision; skips (bicubic, residual adds) stay float32.
        OpenVINO's bf16 is compiled into its modules, not autocast."""
        if self.backend.startswith("openvino") or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.fp16 else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def __str__(self) -> str:
        return f"{self.device}, {self.precision}, {self.backend}"


def from_flags(fp16: bool | None = None, bf16: bool | None = None) -> str:
    """The precision named by the on/off flags that hosts know (--fp16, --bf16; vs-mlrt's fp16)."""
    if fp16 and bf16:
        raise InputError("fp16 and bf16 are both on: pick one precision")
    if fp16 or bf16:
        return "fp16" if fp16 else "bf16"
    return "fp32" if fp16 is False or bf16 is False else "auto"  # a flag turned off: plain fp32


def resolve(device="auto", precision: str | None = "auto", backend: str = "torch") -> Runtime:
    """The one check of device, precision and backend. auto: fp16 on CUDA; bf16 on CPUs where
    it measures faster (precision.py); fp32 elsewhere."""
    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    openvino = backend.startswith("openvino")
    dev = select_device("cpu" if openvino and str(device) in ("None", "auto") else device)
    if openvino:
        if dev.type != "cpu":
            raise InputError(f"backend {backend!r} runs on the CPU: pick device cpu (or backend torch)")
        if precision not in ("auto", "fp32" if backend == "openvino" else "bf16"):
            raise InputError(f"backend {backend!r} sets its own precision: leave precision auto, or pick "
                             f"backend {'openvino-bf16' if precision == 'bf16' else 'openvino'}")
        return Runtime(dev, "bf16" if backend == "openvino-bf16" else "fp32", backend)
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "bf16" if dev.type == "cpu" and cpu_prefers_bf16() else "fp32"
    if precision == "fp16" and dev.type != "cuda":
        raise InputError(f"fp16 needs a CUDA device, but this runs on {dev.type}: pick precision fp32 or bf16")
    if precision == "bf16" and dev.type not in ("cpu", "cuda"):
        raise InputError(f"bf16 runs on a CPU or a CUDA device, but this runs on {dev.type}: pick precision fp32")
    return Runtime(dev, precision, backend)
