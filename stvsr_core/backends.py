"""Where the convolutional sub-networks (M_S, F, R) run.

- "torch": eager PyTorch in channels_last (the CPU's and GPU's fast convolution layout).
- "torch-compile": the same, M_S, F and R through torch.compile (Inductor: needs a C compiler,
  and compiles for about 30 s per frame size on first use).
- "openvino" / "openvino-bf16": M_S, F and R compiled by OpenVINO for the CPU (PyPI
  `openvino`, `pip install 'stvsr[openvino]'`), in fp32 or in bfloat16 (uses AMX or
  AVX512-BF16 where the CPU has them). M_T (DIS flow and warping) stays in PyTorch/OpenCV.
The model definition is the same in every backend: OpenVINO traces the PyTorch modules.
"""
from __future__ import annotations

import copy
import threading
import warnings

import torch
from torch import nn

BACKENDS = ("torch", "torch-compile", "openvino", "openvino-bf16")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


class OpenVINOModule(nn.Module):
    """One sub-network compiled by OpenVINO, once per input shape (a clip has one frame size,
    tiles add a few more). Calls are serialised: an infer request is not thread-safe."""

    def __init__(self, module: nn.Module, precision: str):
        super().__init__()
        self.module, self.precision = module, precision
        self.size_multiple = getattr(module, "size_multiple", 1)
        self.requests: dict = {}
        self.lock = threading.Lock()

    def _compile(self, xs):
        import openvino as ov
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation notes from the converter
            example = tuple(x.detach().float().contiguous().clone() for x in xs)
            model = ov.convert_model(self.module, example_input=example)
        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        return ov.Core().compile_model(model, "CPU", config).create_infer_request()

    def forward(self, *xs: torch.Tensor):
        key = tuple(tuple(x.shape) for x in xs)
        with self.lock:
            if key not in self.requests:
                self.requests[key] = self._compile(xs)
            result = self.requests[key].infer([x.detach().float().contiguous().numpy() for x in xs])
            outs = [torch.from_numpy(result[i].copy()) for i in range(len(result))]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _with_cnns(model: nn.Module, wrap) -> nn.Module:
    """A shallow copy of the DualStream model with M_S, F and R replaced by wrap(module);
    M_T and the config are shared."""
    fast = copy.copy(model)
    fast._modules = dict(model._modules)
    for name in ("M_S", "F", "R"):
        fast._modules[name] = wrap(getattr(model, name))
    return fast


def use_torch_compile(model: nn.Module) -> nn.Module:
    """A copy of the DualStream model whose M_S, F and R are compiled by torch.compile."""
    return _with_cnns(model, lambda m: torch.compile(m, dynamic=False))


def use_openvino(model: nn.Module, backend: str = "openvino") -> nn.Module:
    """A copy of the DualStream model whose M_S, F and R run in OpenVINO on the CPU."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ImportError(f"backend {backend!r} needs OpenVINO: pip install 'stvsr[openvino]' "
                          "(or use the default backend 'torch')") from None
    precision = "bf16" if backend == "openvino-bf16" else "f32"
    return _with_cnns(model, lambda m: OpenVINOModule(m, precision))
