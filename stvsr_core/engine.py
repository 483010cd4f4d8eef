"""Streaming inference: N frames in, 2N-1 (or 2N) frames out at `scale` times the size.

Frames flow through as iterators, so memory depends on the frame size, never on the clip
length: only the previous frame and its spatial output are held.
"""
from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Iterator

import torch

from .backends import BACKENDS, channels_last, use_openvino, use_torch_compile
from .dual_stream import DualStream, Outputs
from .precision import cpu_prefers_bf16
from .scenecut import DEFAULT_THRESHOLD, is_cut
from .threads import ThreadTuner, restored_threads, set_threads
from .tiling import pad_to_multiple, run_tiled

Progress = Callable[[int, "int | None"], None]


class InputError(ValueError):
    """Frames the engine cannot process (wrong shape, size change, NaN, too few)."""


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available: use --device cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} requested but MPS is not available: use --device cpu or auto")
    return dev


@dataclass
class EngineOptions:
    tile: int = 0                  # low-res tile size; 0 = tile only frames over max_pixels
    tile_pad: int = 32             # low-res overlap on each side of a tile
    max_pixels: int = 1280 * 720   # low-res pixels above which tile=0 tiles at 512
    scene_threshold: float | None = DEFAULT_THRESHOLD  # None or 0 turns detection off
    exact_double: bool = False     # 2N frames (last repeated) instead of 2N-1
    fp16: bool | None = None       # None: on for CUDA, off elsewhere
    bf16: bool | None = None       # bfloat16 CNNs; None: on CPUs where it measures faster (precision.py)
    workers: int = 1               # frame pairs computed at once (2: ~1.15x on a 2-core CPU, more memory)
    backend: str = "torch"         # "torch" (channels_last), "torch-compile", "openvino", "openvino-bf16" (CPU)
    threads: int = 0               # CPU threads; 0 = tuned while running to what the machine's load allows


def predict_pair(model: DualStream, L0: torch.Tensor, L1: torch.Tensor, t: float = 0.5) -> Outputs:
    """Every intermediate of one pair ([B, 3, h, w] each), padded for the networks and cropped back.

    For evaluation and the node-by-node hosts; whole clips go through `Engine.run`.
    """
    h, w = L0.shape[-2:]
    m, s = model.size_multiple, model.scale
    with torch.inference_mode():
        out = model(pad_to_multiple(L0, m), pad_to_multiple(L1, m), t)
    crop = {f.name: getattr(out, f.name)[..., : h * s, : w * s] for f in fields(Outputs)}
    crop["L_mid"] = out.L_mid[..., :h, :w]
    return Outputs(**crop)


class Engine:
    """Runs a DualStream model over a clip. Each input frame goes through M_S exactly once."""

    def __init__(self, model: DualStream, device: str | torch.device | None = "auto",
                 options: EngineOptions | None = None, **overrides):
        self.options = options or EngineOptions()
        for k, v in overrides.items():
            if not hasattr(self.options, k):
                raise TypeError(f"Engine: unknown option {k!r}")
            setattr(self.options, k, v)
        o = self.options
        if o.tile < 0 or o.tile_pad < 0:
            raise InputError(f"tile ({o.tile}) and tile_pad ({o.tile_pad}) must be >= 0")
        if o.workers < 1:
            raise InputError(f"workers ({o.workers}) must be >= 1")
        if o.threads < 0:
            raise InputError(f"threads ({o.threads}) must be >= 0 (0: tuned to the load)")
        if o.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {o.backend!r}")
        on_cpu_only = o.backend.startswith("openvino")
        self.device = select_device("cpu" if on_cpu_only and device in (None, "auto") else device)
        if on_cpu_only and self.device.type != "cpu":
            raise InputError(f"backend {o.backend!r} runs on the CPU: use device 'cpu' (or backend 'torch')")
        self.fp16 = (self.device.type == "cuda") if o.fp16 is None else bool(o.fp16)
        if self.fp16 and self.device.type != "cuda":
            raise InputError("fp16 needs a CUDA device: drop fp16 or pick a CUDA device")
        torch_backend = o.backend.startswith("torch")
        auto = self.device.type == "cpu" and torch_backend and cpu_prefers_bf16()
        self.bf16 = auto if o.bf16 is None else bool(o.bf16)
        if self.bf16 and (self.fp16 or self.device.type not in ("cpu", "cuda") or not torch_backend):
            raise InputError("bf16 runs with the torch backend on a CPU or a CUDA device, without fp16: "
                             "pick one precision")
        self.model = model.eval().to(self.device)
        if torch_backend:
            # the fast convolution layout on CPUs (oneDNN) and GPUs (tensor cores); in place
            self.model.to(memory_format=torch.channels_last)
            if o.backend == "torch-compile":
                self.model = use_torch_compile(self.model)
        else:
            self.model = use_openvino(self.model, o.backend)
        self.workers = o.workers
        self.scale = model.scale
        self.stats = {"spatial_calls": 0, "middle_calls": 0, "scene_cuts": 0}

    @property
    def precision(self) -> str:
        """How the networks run, for logs: e.g. 'cpu, bf16, torch'."""
        p = "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"
        if self.options.backend == "openvino-bf16":
            p = "bf16"
        return f"{self.device}, {p}, {self.options.backend}"

    # -- the two units of work, padded and tiled -------------------------------------------
    def autocast(self):
        if self.fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        if self.bf16:  # convolutions in bfloat16; skips (bicubic, residual adds) stay float32
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _tile_size(self, h: int, w: int) -> int:
        o = self.options
        if o.tile > 0:
            return o.tile if (h > o.tile or w > o.tile) else 0
        return 512 if h * w > o.max_pixels else 0

    def _run(self, fn, lr: list, hr: list) -> list[torch.Tensor]:
        h, w = lr[0].shape[-2:]
        tile = self._tile_size(h, w)
        cl = lambda xs: [channels_last(x) for x in xs]
        call = lambda a, b: [r.float().contiguous() for r in fn(cl(a), cl(b))]
        with torch.inference_mode(), self.autocast():
            if not tile:
                return call(lr, hr)
            return run_tiled(call, lr, hr, scale=self.scale, tile=tile, pad=self.options.tile_pad,
                             multiple=self.model.size_multiple)

    def spatial(self, L: torch.Tensor) -> torch.Tensor:
        """M_S of one padded low-res frame [1, 3, h, w]."""
        self.stats["spatial_calls"] += 1
        return self._run(lambda lr, hr: [self.model.spatial(lr[0])], [L], [])[0]

    def _streams(self, L0, L1, H0, H1, t: float):
        """(H_st, H_ts) on padded frames: the same steps as DualStream.middle. M_T runs on whole
        frames (large motion crosses tiles); M_S on L_mid is tiled when the frame is large."""
        with torch.inference_mode(), self.autocast():
            L_mid, H_st = self.model.interpolate(L0, L1, H0, H1, t)
        if self.model.single_stream:
            return L_mid, H_st.float(), H_st.float()
        H_ts = self._run(lambda lr, hr: [self.model.spatial(lr[0])], [L_mid], [])[0]
        return L_mid, H_st.float(), H_ts

    def middle(self, L0, L1, H0, H1, t: float = 0.5) -> torch.Tensor:
        """H_R for the frame between two padded low-res frames, reusing their spatial outputs."""
        self.stats["middle_calls"] += 1
        m = self.model
        L_mid, H_st, H_ts = self._streams(L0, L1, H0, H1, t)
        with torch.inference_mode():
            cue = m.cue(L0, L1, t)
        fuse_refine = lambda lr, hr: [m.refine(m.fuse(hr[0], hr[1], hr[2] if len(hr) > 2 else None)[2])]
        return self._run(fuse_refine, [L_mid], [H_st, H_ts] + ([cue] if cue is not None else []))[0]

    # -- single stages on unpadded batches, for hosts that expose the paper's steps as nodes ----
    def _crop(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x[..., :h, :w]

    def upscale(self, L: torch.Tensor) -> torch.Tensor:
        """M_S of each frame of a batch [B, 3, h, w] -> [B, 3, s*h, s*w]."""
        h, w = L.shape[-2:]
        Lp = pad_to_multiple(L.to(self.device, torch.float32), self.model.size_multiple)
        out = torch.cat([self.spatial(Lp[i:i + 1]) for i in range(Lp.shape[0])])
        return self._crop(out, h * self.scale, w * self.scale)

    def interpolate_frames(self, I0: torch.Tensor, I1: torch.Tensor, t: float = 0.5) -> torch.Tensor:
        """M_T alone, at the frames' own resolution ([B, 3, h, w] each)."""
        h, w = I0.shape[-2:]
        m = self.model.M_T.size_multiple
        with torch.inference_mode(), self.autocast():
            out = self.model.M_T(pad_to_multiple(I0.to(self.device, torch.float32), m),
                                 pad_to_multiple(I1.to(self.device, torch.float32), m), t)
        return self._crop(out.float(), h, w)

    def streams(self, L0, L1, H0, H1, t: float = 0.5):
        """(H_st, H_ts) between two low-res frames, given their spatial outputs."""
        h, w = L0.shape[-2:]
        mult, s = self.model.size_multiple, self.scale
        dev = lambda x: x.to(self.device, torch.float32)
        _, H_st, H_ts = self._streams(pad_to_multiple(dev(L0), mult), pad_to_multiple(dev(L1), mult),
                                      pad_to_multiple(dev(H0), mult * s), pad_to_multiple(dev(H1), mult * s), t)
        return self._crop(H_st, h * s, w * s), self._crop(H_ts, h * s, w * s)

    def _high_res(self, fn, *H: torch.Tensor):
        """Run fn on high-res tensors padded to the model's multiple, tiled like the engine."""
        h, w = H[0].shape[-2:]
        s, mult = self.scale, self.model.size_multiple
        Hp = [pad_to_multiple(x.to(self.device, torch.float32), mult * s) for x in H]
        geometry = Hp[0][:, :, ::s, ::s]  # the low-res grid the tiles are laid on
        return [self._crop(o, h, w) for o in self._run(lambda lr, hr: fn(*hr), [geometry], Hp)]

    def fuse(self, H_st: torch.Tensor, H_ts: torch.Tensor):
        """F alone: (M_st, M_ts, H_F)."""
        if H_st.shape != H_ts.shape:
            raise InputError(f"the two streams differ in shape: H_st {tuple(H_st.shape)} vs H_ts "
                             f"{tuple(H_ts.shape)}: feed both from the same Dual-Stream output")
        if self.model.needs_cue:
            raise InputError("this model's F also reads the low-res frames (a DIS warp-error cue), which "
                             "the streams alone do not carry: run the whole model (STVSR Upsample / Engine.run)")
        return tuple(self._high_res(lambda a, b: list(self.model.fuse(a, b)), H_st, H_ts))

    def refine(self, H_F: torch.Tensor) -> torch.Tensor:
        """R alone: H_R = R(H_F) + H_F."""
        return self._high_res(lambda x: [self.model.refine(x)], H_F)[0]

    # -- streaming ---------------------------------------------------------------------------
    def prepare(self, frame: torch.Tensor, index: int, size) -> torch.Tensor:
        """One input frame [3, H, W] -> checked, on the device, padded [1, 3, H', W']."""
        if not isinstance(frame, torch.Tensor) or frame.ndim != 3 or frame.shape[0] != 3:
            shape = tuple(frame.shape) if hasattr(frame, "shape") else type(frame).__name__
            raise InputError(f"frame {index}: expected an RGB tensor [3, H, W], got {shape}")
        if size is not None and tuple(frame.shape[-2:]) != size:
            raise InputError(f"frame {index} is {tuple(frame.shape[-2:])} but frame 0 is {size}: "
                             "all frames of a clip must have one size (resize them first)")
        x = frame.to(self.device, torch.float32, non_blocking=True)
        if not torch.isfinite(x).all():
            raise InputError(f"frame {index} contains NaN or infinite values: clean the input first")
        return pad_to_multiple(x.clamp(0, 1)[None], self.model.size_multiple)

    def output(self, H: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A padded high-res result -> the output frame [3, s*H, s*W] (float32, 0..1, CPU)."""
        return H[0, :, : size[0] * self.scale, : size[1] * self.scale].clamp(0, 1).cpu()

    def run(self, frames: Iterable[torch.Tensor], total: int | None = None,
            progress: Progress | None = None) -> Iterator[torch.Tensor]:
        """Yield output frames [3, s*H, s*W] (float32, 0..1, on the CPU) in display order.

        Output 2k is the SR of input k; output 2k+1 is the frame between inputs k and k+1,
        or a copy of output 2k when the pair straddles a scene cut.
        """
        o = self.options
        n_out = None if total is None else 2 * total - (0 if o.exact_double else 1)
        done, size, prev = 0, None, None
        workers = self.workers
        queue: deque = deque()  # output frames in display order: tensors, or futures of them

        def emit(item):
            nonlocal done
            H = item.result() if isinstance(item, Future) else item
            done += 1
            if progress:
                progress(done, n_out)
            return self.output(H, size)

        n_in = 0
        # On a CPU the thread count follows the load (threads.py); a fixed count where one is set
        tuned = self.device.type == "cpu" and o.threads == 0 and workers == 1
        tuner = ThreadTuner() if tuned else None
        unit = tuner.unit if tuner else lambda: contextlib.nullcontext({})
        # In-between frames run on `workers` threads while the main thread reads the next frame
        # and runs its M_S: on a CPU, DIS and the small ops leave cores idle that a second pair
        # can use (opt-in: peak memory then rose by ~9% from 100 to 1000 frames, flat with 1).
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool, \
                restored_threads():
            if self.device.type == "cpu" and o.threads:
                set_threads(o.threads)
            for n_in, frame in enumerate(frames, 1):
                with unit() as work:  # the compute of one input frame, not the consumer's time
                    L = self.prepare(frame, n_in - 1, size)
                    size = size or tuple(frame.shape[-2:])
                    H = self.spatial(L)
                    work["typical"] = False  # until an in-between frame is computed
                    if prev is not None:
                        Lp, Hp = prev
                        if n_in == 2:  # held back until a pair exists, so one frame never yields output
                            queue.append(Hp)
                        if is_cut(Lp, L, o.scene_threshold):
                            self.stats["scene_cuts"] += 1
                            queue.append(Hp)
                        else:
                            queue.append(pool.submit(self.middle, Lp, L, Hp, H) if pool
                                         else self.middle(Lp, L, Hp, H))
                            work["typical"] = True
                        queue.append(H)
                if prev is not None:
                    while len(queue) > 2 * (workers - 1):  # at most `workers` pairs in flight
                        yield emit(queue.popleft())
                prev = (L, H)
            while queue:
                yield emit(queue.popleft())
        if n_in < 2:
            raise InputError(f"got {n_in} frame(s): interpolation needs at least 2 frames")
        if o.exact_double:
            yield emit(prev[1])
