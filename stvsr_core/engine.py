"""Inference over clips: streamed (N frames in, the timeline's frames out, for the CLI and the
nodes) or random access (`Engine.access`, for VapourSynth). Both render the same timeline slots
through the same composition, and each source frame goes through M_S at most once.

Streaming holds only the frames still in flight, so memory depends on the frame size, never on
the clip length.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import torch

from .backends import channels_last, use_openvino, use_torch_compile
from .dual_stream import DualStream, Outputs
from .runner import Runner
from .runtime import InputError, resolve, select_device  # noqa: F401  (InputError, select_device: public here)
from .scenecut import DEFAULT_THRESHOLD, is_cut
from .threads import ThreadTuner, cpu_plan, restored_threads, set_threads
from .tiling import pad_to_multiple, run_tiled
from .timeline import Retime, Slot, Timeline

Progress = Callable[[int, "int | None"], None]


@dataclass
class EngineOptions:
    """The one source of defaults for the CLI, the node widgets and the filter."""

    tile: int = 0                  # low-res tile size; 0 = tile only frames over max_pixels
    tile_pad: int = 32             # low-res overlap on each side of a tile
    max_pixels: int = 1280 * 720   # low-res pixels above which tile=0 tiles at 512
    scene_threshold: float | None = DEFAULT_THRESHOLD  # None or 0 turns detection off
    factor: Fraction | int = 2     # output frames per input frame (1: spatial-only)
    fps: Fraction | None = None    # a target output rate instead of a factor (e.g. 60000/1001)
    exact_double: bool = False     # keep the duration: the last frame is held (2N frames at x2, not 2N-1)
    upscale: bool = True           # False: temporal-only, the frames keep their size (M_T at low res)
    precision: str = "auto"        # auto, fp32, bf16, fp16 (runtime.resolve)
    workers: int = 0               # frame pairs computed at once; 0 = 2 on a CPU (threads.cpu_plan), 1 on a GPU
    backend: str = "torch"         # "torch" (channels_last), "torch-compile", "openvino", "openvino-bf16" (CPU)
    threads: int = 0               # CPU threads per op; 0 = the cores split between the pairs (one pair: tuned)

    def retime(self) -> Retime:
        return Retime(self.factor, self.fps, self.exact_double)


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


class OnceCache:
    """Values computed once per key even when several threads ask at the same time (VapourSynth
    requests frames concurrently); the `capacity` most recent are kept."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()
        self.computed = 0  # values computed, for tests and statistics

    def get(self, key, compute):
        with self.lock:
            entry = self.entries.get(key)
            owner = entry is None
            if owner:
                entry = self.entries[key] = (threading.Event(), [])
                while len(self.entries) > self.capacity:
                    oldest = next(iter(self.entries))
                    if not self.entries[oldest][0].is_set():
                        break  # never drop one that is being computed
                    self.entries.pop(oldest)
            else:
                self.entries.move_to_end(key)
        event, box = entry
        if owner:
            try:
                box.append(compute())
                self.computed += 1
            except BaseException as e:
                box.append(e)
                with self.lock:
                    self.entries.pop(key, None)
                raise
            finally:
                event.set()
        event.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


def _floats(x):
    """Step outputs back in float32 (autocast may leave bfloat16 or float16)."""
    if isinstance(x, torch.Tensor):
        return x.float().contiguous()
    if isinstance(x, (tuple, list)):
        return type(x)(_floats(v) for v in x)
    return x


class _EngineRunner(Runner):
    """The engine's way to run each step: inference mode, the runtime's precision, and tiles for
    the convolutional steps of large frames."""

    def __init__(self, engine: "Engine"):
        self.engine = engine

    def whole(self, step, fn, *args):
        with torch.inference_mode(), self.engine.autocast():
            return _floats(fn(*args))

    def tiled(self, step, fn, lr, hr):
        return self.engine._run(fn, lr, hr)


class Access:
    """Random access to one clip's output (`Engine.access`): `render(slot)`, `frame(k)`,
    `between(k, t)` in any order and from any thread. Each source frame's M_S output and each
    pair's M_T estimate are computed once and kept in bounded caches; `source(k)` gives the
    input frame k ([3, H, W]) when it is not cached."""

    def __init__(self, engine: "Engine", size: tuple[int, int] | None = None, capacity: int = 8):
        self.engine, self.size = engine, size
        self.inputs = OnceCache(capacity)     # k -> L: the checked, padded low-res frame
        self.spatial = OnceCache(capacity)    # k -> H: M_S once per source frame
        self.estimates = OnceCache(capacity)  # k -> the pair (k, k+1)'s M_T estimate
        self.cuts = OnceCache(4 * capacity)   # k -> whether a cut lies between k and k+1

    def _shared(self, value):
        """A value other threads will read: on CUDA its work finishes first, since the next reader
        may run on another CUDA stream (VapourSynth's num_streams)."""
        if self.engine.device.type == "cuda":
            torch.cuda.current_stream(self.engine.device).synchronize()
        return value

    def _input(self, k: int, source) -> torch.Tensor:
        def compute():
            frame = source(k)
            L = self.engine.prepare(frame, k, self.size)
            self.size = self.size or tuple(frame.shape[-2:])
            return self._shared(L)
        return self.inputs.get(k, compute)

    def _frame(self, k: int, source):
        """(L, H) of source frame k; H is None for temporal-only output (no M_S)."""
        L = self._input(k, source)
        if not self.engine.options.upscale:
            return L, None
        return L, self.spatial.get(k, lambda: self._shared(self.engine.spatial(L)))

    def cut(self, k: int, source, flag: bool | None = None) -> bool:
        """A cut between k and k+1: the host's flag where it has one, else the one cut measure
        (on the low-res frames: no M_S needed to decide)."""
        def compute():
            cut = bool(flag) if flag is not None else is_cut(self._input(k, source), self._input(k + 1, source),
                                                             self.engine.options.scene_threshold)
            self.engine.stats["scene_cuts"] += cut
            return cut
        return self.cuts.get(k, compute)

    def render(self, slot: Slot, source, cut: bool | None = None) -> torch.Tensor:
        """The output frame of a timeline slot: [3, s*H, s*W] (or [3, H, W] temporal-only), float32
        0..1 on the CPU. Across a cut the in-between frames repeat the frame before."""
        if slot.between and not self.cut(slot.k, source, cut):
            return self.engine.output(self._between(slot.k, float(slot.t), source), self.size)
        L, H = self._frame(slot.k, source)
        return self.engine.output(L if H is None else H, self.size)

    def frame(self, k: int, source) -> torch.Tensor:
        return self.render(Slot(0, k, Fraction(0), Fraction(0)), source)

    def between(self, k: int, t: float, source, cut: bool | None = None) -> torch.Tensor:
        return self.render(Slot(0, k, Fraction(t), Fraction(0)), source, cut)

    def _between(self, k: int, t: float, source) -> torch.Tensor:
        (L0, H0), (L1, H1) = self._frame(k, source), self._frame(k + 1, source)
        est = self.estimates.get(k, lambda: self._shared(self.engine.estimate(L0, L1, H0, H1)))
        if H0 is None:
            return self.engine.between_low(L0, L1, t, est)
        return self.engine.middle(L0, L1, H0, H1, t, est)


class Engine:
    """Runs a DualStream model over a clip. Each input frame goes through M_S at most once."""

    def __init__(self, model: DualStream, device: str | torch.device | None = "auto",
                 options: EngineOptions | None = None, **overrides):
        self.options = options or EngineOptions()
        for k, v in overrides.items():
            if k not in EngineOptions.__dataclass_fields__:
                raise TypeError(f"Engine: unknown option {k!r}")
            setattr(self.options, k, v)
        o = self.options
        if o.tile < 0 or o.tile_pad < 0:
            raise InputError(f"tile ({o.tile}) and tile_pad ({o.tile_pad}) must be >= 0")
        if o.workers < 0:
            raise InputError(f"workers ({o.workers}) must be >= 0 (0: automatic)")
        if o.threads < 0:
            raise InputError(f"threads ({o.threads}) must be >= 0 (0: automatic)")
        try:
            self.retime = o.retime()
        except ValueError as e:
            raise InputError(str(e)) from None
        if not (o.upscale or self.retime.temporal):
            raise InputError("temporal-only (upscale off) with factor 1 leaves nothing to do: raise the factor "
                             "or turn upscaling on")
        self.runtime = resolve(device, o.precision, o.backend)
        self.device = self.runtime.device
        self.info = model.info
        self.model = model.eval().to(self.device)
        if o.backend.startswith("torch"):
            # the fast convolution layout on CPUs (oneDNN) and GPUs (tensor cores); in place
            self.model.to(memory_format=torch.channels_last)
            if o.backend == "torch-compile":
                self.model = use_torch_compile(self.model)
        else:
            self.model = use_openvino(self.model, o.backend)
        if self.device.type == "cpu":
            self.workers, self.threads = cpu_plan(o.workers, o.threads)
        else:  # one pair: the GPU runs it, and the CPU threads only feed it
            self.workers, self.threads = o.workers or 1, o.threads
        self.scale = model.scale if o.upscale else 1
        self.runner = _EngineRunner(self)
        self.stats = {"spatial_calls": 0, "middle_calls": 0, "estimates": 0, "scene_cuts": 0}

    @property
    def precision(self) -> str:
        """How the networks run, for logs: e.g. 'cpu, bf16, torch'."""
        return str(self.runtime)

    def autocast(self):
        return self.runtime.autocast()

    # -- the units of work on padded frames, through the one composition ----------------------
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
            return run_tiled(call, lr, hr, scale=self.model.scale, tile=tile, pad=self.options.tile_pad,
                             multiple=self.model.size_multiple)

    def spatial(self, L: torch.Tensor) -> torch.Tensor:
        """M_S of one padded low-res frame [1, 3, h, w]."""
        self.stats["spatial_calls"] += 1
        return self.model.spatial(L, self.runner)

    def estimate(self, L0, L1, H0=None, H1=None):
        """M_T's work for every t of a pair (DIS flows), once per pair; None for an M_T without any."""
        self.stats["estimates"] += 1
        return self.model.estimate(L0, L1, H0, H1, self.runner)

    def middle(self, L0, L1, H0, H1, t: float = 0.5, estimate=None) -> torch.Tensor:
        """H_R at time t between two padded low-res frames, reusing their spatial outputs."""
        self.stats["middle_calls"] += 1
        return self.model.middle(L0, L1, H0, H1, t, estimate, self.runner).H_R

    def between_low(self, L0, L1, t: float = 0.5, estimate=None) -> torch.Tensor:
        """Temporal-only: M_T's in-between frame at the input's size."""
        self.stats["middle_calls"] += 1
        return self.model.interpolate(L0, L1, None, None, t, estimate, self.runner)[0]

    # -- single stages on unpadded batches, for hosts that expose the paper's steps as nodes ----
    @staticmethod
    def _crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return x[..., :h, :w]

    def _padded(self, x: torch.Tensor, multiple: int) -> torch.Tensor:
        return pad_to_multiple(x.to(self.device, torch.float32), multiple)

    def upscale(self, L: torch.Tensor) -> torch.Tensor:
        """M_S of each frame of a batch [B, 3, h, w] -> [B, 3, s*h, s*w]."""
        h, w = L.shape[-2:]
        s = self.model.scale
        Lp = self._padded(L, self.model.size_multiple)
        out = torch.cat([self.spatial(Lp[i:i + 1]) for i in range(Lp.shape[0])])
        return self._crop(out, h * s, w * s)

    def interpolate_frames(self, I0: torch.Tensor, I1: torch.Tensor, t=0.5):
        """M_T alone, at the frames' own resolution ([B, 3, h, w] each). t may be a list of times:
        they share one estimate (DIS flows once per pair) and a list of frames comes back."""
        h, w = I0.shape[-2:]
        m = self.model.M_T.size_multiple
        a, b = self._padded(I0, m), self._padded(I1, m)
        est = self.model.estimate(a, b, run=self.runner)
        outs = [self._crop(self.model.interpolate(a, b, None, None, ti, est, self.runner)[0], h, w)
                for ti in (t if isinstance(t, (list, tuple)) else [t])]
        return outs if isinstance(t, (list, tuple)) else outs[0]

    def streams(self, L0, L1, H0, H1, t=0.5, cue=False):
        """(H_st, H_ts) between two low-res frames, given their spatial outputs; for a list of
        times, a list of pairs sharing one estimate. cue=True: (H_st, H_ts, Engine.cue's cue)
        from that same estimate."""
        h, w = L0.shape[-2:]
        mult, s = self.model.size_multiple, self.model.scale
        lo = [self._padded(x, mult) for x in (L0, L1)]
        hi = [self._padded(x, mult * s) for x in (H0, H1)]
        est = self.model.estimate(*lo, *hi, run=self.runner)
        outs = []
        for ti in (t if isinstance(t, (list, tuple)) else [t]):
            _, H_st, H_ts = self.model.streams(*lo, *hi, ti, est, run=self.runner)
            out = (self._crop(H_st, h * s, w * s), self._crop(H_ts, h * s, w * s))
            outs.append(out + (self._cue(lo, ti, est, h * s, w * s),) if cue else out)
        return outs if isinstance(t, (list, tuple)) else outs[0]

    def cue(self, L0, L1, t=0.5):
        """F's extra input between two low-res frames at the output size ([1, 1, H, W]; a list for
        a list of times), or None when this model's F reads the streams alone."""
        if not self.info.needs_cue:
            return None
        h, w = L0.shape[-2:]
        lo = [self._padded(x, self.model.size_multiple) for x in (L0, L1)]
        s = self.model.scale
        outs = [self._cue(lo, ti, None, h * s, w * s) for ti in (t if isinstance(t, (list, tuple)) else [t])]
        return outs if isinstance(t, (list, tuple)) else outs[0]

    def _cue(self, lo, t, estimate, h: int, w: int):
        c = self.model.cue(*lo, t, self.runner, estimate)
        return None if c is None else self._crop(c, h, w)

    def _high_res(self, fn, *H: torch.Tensor):
        """fn on high-res tensors padded to the model's multiple, through the engine's runner."""
        h, w = H[0].shape[-2:]
        mult = self.model.size_multiple * self.model.scale
        return [self._crop(o, h, w) for o in fn(*(self._padded(x, mult) for x in H))]

    def fuse(self, H_st: torch.Tensor, H_ts: torch.Tensor, cue: torch.Tensor | None = None):
        """F alone: (M_st, M_ts, H_F). `cue`: Engine.cue of the same pair, for a model whose F reads it."""
        if H_st.shape != H_ts.shape:
            raise InputError(f"the two streams differ in shape: H_st {tuple(H_st.shape)} vs H_ts "
                             f"{tuple(H_ts.shape)}: feed both from the same Dual-Stream output")
        if not self.info.needs_cue:
            return tuple(self._high_res(lambda a, b: self.model.fuse(a, b, run=self.runner), H_st, H_ts))
        if cue is None:
            raise InputError("this model's F also reads DIS's warp error between the low-res frames (the cue), "
                             "which the streams alone do not carry: pass the cue of the same pair "
                             "(Dual-Stream Upsample's cue output, Engine.cue)")
        if cue.shape[-2:] != H_st.shape[-2:]:
            raise InputError(f"the cue is {tuple(cue.shape[-2:])} but the streams are {tuple(H_st.shape[-2:])}: "
                             "feed all three from the same Dual-Stream output")
        return tuple(self._high_res(lambda a, b, c: self.model.fuse(a, b, c, run=self.runner), H_st, H_ts, cue))

    def refine(self, H_F: torch.Tensor) -> torch.Tensor:
        """R alone: H_R = R(H_F) + H_F."""
        return self._high_res(lambda x: [self.model.refine(x, self.runner)], H_F)[0]

    # -- clips ------------------------------------------------------------------------------------
    def prepare(self, frame: torch.Tensor, index: int, size) -> torch.Tensor:
        """One input frame [3, H, W] -> checked, on the device, padded [1, 3, H', W']."""
        if not isinstance(frame, torch.Tensor) or frame.ndim != 3 or frame.shape[0] != 3:
            shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
            raise InputError(f"frame {index}: expected an RGB tensor [3, H, W], got {shape}")
        if size is not None and tuple(frame.shape[-2:]) != tuple(size):
            raise InputError(f"frame {index} is {tuple(frame.shape[-2:])} but frame 0 is {tuple(size)}: "
                             "all frames of a clip must have one size (resize them first)")
        x = frame.to(self.device, torch.float32, non_blocking=True)
        if not torch.isfinite(x).all():
            raise InputError(f"frame {index} contains NaN or infinite values: clean the input first")
        return pad_to_multiple(x.clamp(0, 1)[None], self.model.size_multiple)

    def output(self, H: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A padded result -> the output frame [3, s*H, s*W] (float32, 0..1, CPU)."""
        return H[0, :, : size[0] * self.scale, : size[1] * self.scale].clamp(0, 1).cpu()

    def timeline(self, fps_in=None) -> Timeline:
        """The output timeline these options give for a source at fps_in (needed for an fps target)."""
        try:
            return Timeline(self.retime, fps_in)
        except ValueError as e:
            raise InputError(str(e)) from None

    def access(self, size: tuple[int, int] | None = None, capacity: int = 8) -> Access:
        """Random access to one clip (frames of `size`), e.g. for VapourSynth."""
        return Access(self, size, capacity)

    def run(self, frames: Iterable[torch.Tensor], total: int | None = None, progress: Progress | None = None,
            timeline: Timeline | None = None, fps_in=None) -> Iterator[torch.Tensor]:
        """Yield the output frames [3, s*H, s*W] (float32, 0..1, on the CPU) in display order.

        The slots come from `timeline`, else from the options at a constant rate (fps_in: the
        input's rate, needed for an fps target). A caller with timestamps (VFR) feeds each to
        `timeline.add` before yielding its frame; frames it did not time are one period apart.
        """
        o = self.options
        timeline = timeline or self.timeline(fps_in)
        n_out = None if total is None else timeline.count(total)
        access = Access(self, capacity=4)
        pending: dict[int, torch.Tensor] = {}  # input frames whose M_S has not run yet
        workers, done, n_in = self.workers, 0, 0
        queue: deque = deque()  # output frames in display order: tensors, or futures of them

        def source(k):
            return pending.pop(k)

        def emit(item):
            nonlocal done
            image = item.result() if isinstance(item, Future) else item
            done += 1
            if progress:
                progress(done, n_out)
            return image

        def schedule(slots, work):
            for slot in slots:
                inner = slot.between and not access.cut(slot.k, source)
                work["typical"] |= inner
                queue.append(pool.submit(access.render, slot, source) if pool and inner
                             else access.render(slot, source))

        # One pair on a CPU: its thread count follows the load (threads.py), unless one is set
        tuned = self.device.type == "cpu" and self.threads == 0 and workers == 1
        tuner = ThreadTuner() if tuned else None
        unit = tuner.unit if tuner else lambda: contextlib.nullcontext({})
        # In-between frames run on `workers` threads while the main thread reads the next frame
        # and runs its M_S: pairs in parallel need no barrier between cores (threads.cpu_plan),
        # and at most `workers` are in flight, so memory stays flat with clip length.
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool, \
                restored_threads():
            if self.device.type == "cpu" and self.threads:
                set_threads(self.threads)
            for n_in, frame in enumerate(frames, 1):
                if timeline.n < n_in:  # not timed by the caller
                    timeline.add(None)
                with unit() as work:  # the compute of one input frame, not the consumer's time
                    pending[n_in - 1] = frame
                    access.size = access.size or (tuple(frame.shape[-2:]) if isinstance(frame, torch.Tensor) else None)
                    work["typical"] = False  # until an in-between frame is computed
                    access._frame(n_in - 1, source)  # checks the frame (and runs M_S) as it arrives
                    schedule(timeline.ready(), work)
                while len(queue) > 2 * (workers - 1):  # at most `workers` pairs in flight
                    yield emit(queue.popleft())
            if n_in < 2 and self.retime.temporal:
                raise InputError(f"got {n_in} frame(s): interpolation needs at least 2 frames")
            timeline.close()
            schedule(timeline.ready(), {"typical": False})
            while queue:
                yield emit(queue.popleft())
