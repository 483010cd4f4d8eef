"""`core.stvsr.Upsample(clip, ...)`: the model's size and a new frame rate for VapourSynth clips.

A thin host on `stvsr_core.Engine` (no model math and no timeline here): the output frame count,
and which source frame k and time t each output frame j shows, come from the engine's timeline
(`engine.timeline(fps_in)`: any factor, an fps target, exact_double). Frames become tensors and
go through the engine's random access (`engine.access`): each source frame through M_S once,
each pair's M_T estimate once for all its in-between times, one cut measure; the results become
frames again. At factor 2, output frame 2k is source frame k upscaled and 2k+1 the frame between
k and k+1 (a copy of 2k across a scene cut); by default the last frame is held so the clip keeps
its duration (2N frames). Factor 1 is spatial-only; upscale=False is temporal-only.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from fractions import Fraction

import numpy as np
import torch
import vapoursynth as vs

from stvsr_core.engine import Engine, EngineOptions, InputError, select_device
from stvsr_core.registry import load_model, resolve_model
from stvsr_core.runtime import from_flags
from stvsr_core.timeline import Slot
from stvsr_core.weights import WeightsError

from .convert import MATRICES, to_rgb

core = vs.core

ALPHA_DROPPED = ("stvsr.Upsample: the clip's alpha (_Alpha) is dropped; to keep it, upsample it as a clip of "
                 "its own and attach it: out.std.ClipToProp(core.stvsr.Upsample(clip.std.PropToClip('_Alpha')), "
                 "'_Alpha'); to silence this, clip.std.RemoveFrameProps('_Alpha')")

_MODELS: dict = {}  # (path, device) -> DualStream, shared by every Upsample call in a process
_MODELS_LOCK = threading.Lock()


def _error(msg: str) -> vs.Error:
    return vs.Error(f"stvsr.Upsample: {msg}")


def _as_bool(name: str, v) -> bool:
    if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
        return bool(v)
    raise _error(f"{name} must be True or False (1 or 0), got {v!r}")


def _as_int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _error(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def _device(device, device_index: int) -> torch.device:
    """As in the CLI: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'. device_index picks the GPU when
    device names none; off CUDA a non-zero device_index is refused rather than ignored."""
    named = None
    if device != "auto":
        try:
            named = torch.device(device) if isinstance(device, str) else None
        except RuntimeError:
            pass
        if named is None or named.type not in ("cpu", "cuda", "mps"):
            raise _error(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if named is not None and named.index is not None and device_index not in (0, named.index):
        raise _error(f"device={device!r} and device_index={device_index} name different GPUs: give one of them")
    try:
        dev = select_device(device)
    except InputError as e:
        raise _error(str(e).replace("--device ", "device=")) from None
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else device_index
        if index >= torch.cuda.device_count():
            raise _error(f"CUDA device {index} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")
        dev = torch.device("cuda", index)
    elif device_index != 0:
        raise _error(f"device_index={device_index} picks a CUDA GPU, but this filter runs on {dev.type}: "
                     "drop device_index")
    return dev


def _load(model, dev: torch.device):
    if not isinstance(model, (str, os.PathLike)):
        raise _error(f"model must be a shipped model name or a .safetensors path, got {model!r}")
    try:
        path = resolve_model(model)
        with _MODELS_LOCK:
            key = (str(path), str(dev))
            if key not in _MODELS:
                _MODELS[key] = load_model(path).to(dev).eval()
            return _MODELS[key]
    except WeightsError as e:
        raise _error(str(e)) from None


class _Worker:
    """The engine behind one Upsample call: its random access to the clip (M_S once per source
    frame, bounded caches, the one cut measure), slots for concurrent inference (one CUDA stream
    each when num_streams > 1), and the frame <-> tensor conversions."""

    def __init__(self, engine: Engine, num_streams: int, size: tuple[int, int], capacity: int):
        self.engine = engine
        self.access = engine.access(size, capacity)
        self.slots: queue.Queue = queue.Queue()
        cuda = engine.device.type == "cuda"
        for _ in range(num_streams):
            self.slots.put(torch.cuda.Stream(engine.device) if cuda and num_streams > 1 else None)

    @contextlib.contextmanager
    def _slot(self):
        stream = self.slots.get()
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                yield
            if stream is not None:
                stream.synchronize()  # results are read on another stream or the CPU next
        finally:
            self.slots.put(stream)

    @staticmethod
    def _tensor(frame: vs.VideoFrame) -> torch.Tensor:
        planes = np.stack([np.asarray(frame[p]) for p in range(3)])
        return torch.from_numpy(planes).float()

    def _source(self, frames: dict[int, vs.VideoFrame]):
        return lambda k: self._tensor(frames[k])

    def render(self, slot: Slot, frames: dict[int, vs.VideoFrame], cut: bool | None) -> torch.Tensor:
        """Output frame `slot` from the source frames it needs (`frames`: index -> frame)."""
        with self._slot():
            return self.access.render(slot, self._source(frames), cut)

    def cut(self, k: int, frames: dict[int, vs.VideoFrame], flag: bool | None) -> bool:
        """Whether a cut lies between source frames k and k+1: `flag` where the clip says, else the
        engine's measure."""
        with self._slot():
            return self.access.cut(k, self._source(frames), flag)


def _write(out: vs.VideoFrame, image: torch.Tensor) -> None:
    data = image.numpy()
    for p in range(3):
        np.copyto(np.asarray(out[p]), data[p], casting="unsafe")  # float32 -> float16 for RGBH


def _at(clip: vs.VideoNode, k: int, n: int) -> vs.VideoNode:
    """A clip whose frame n is frame k of `clip` (how one request gets the source frames it needs)."""
    return clip[k] * (n + 1)


def _fraction(num, den, what: str) -> Fraction | None:
    if num is None and den is None:
        return None
    if num is None:
        raise _error(f"{what}_den={den!r} needs {what}_num as well")
    return Fraction(_as_int(f"{what}_num", num, 1), _as_int(f"{what}_den", 1 if den is None else den, 1))


def _precision(precision, fp16, bf16) -> str:
    """One precision from `precision` or vs-mlrt's on/off flags (fp16, bf16); the engine checks
    it against the device (runtime.resolve)."""
    if not isinstance(precision, str):
        raise _error(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    flags = {k: _as_bool(k, v) for k, v in (("fp16", fp16), ("bf16", bf16)) if v is not None}
    if flags and precision != "auto":
        raise _error(f"precision={precision!r} and {', '.join(f'{k}={v}' for k, v in flags.items())} both set "
                     "the precision: give one of them")
    try:
        return from_flags(flags.get("fp16"), flags.get("bf16")) if flags else precision
    except InputError as e:
        raise _error(str(e)) from None


_DEFAULTS = EngineOptions()  # the one source of defaults (the CLI's and the nodes' too)
_FACTOR = Fraction(_DEFAULTS.factor)


def upsample(clip: vs.VideoNode, model: str = "default", device_index: int = 0, device: str = "auto",
             fp16: bool | None = None, bf16: bool | None = None, num_streams: int = 1, tile: int = _DEFAULTS.tile,
             tile_pad: int = _DEFAULTS.tile_pad, sc: bool = True, sc_threshold: float = _DEFAULTS.scene_threshold,
             exact_double: bool = True, matrix_in_s: str | None = None, backend: str = _DEFAULTS.backend,
             factor_num: int = _FACTOR.numerator, factor_den: int = _FACTOR.denominator, fps_num: int | None = None,
             fps_den: int | None = None, upscale: bool = _DEFAULTS.upscale,
             precision: str = _DEFAULTS.precision) -> vs.VideoNode:
    """Upscale `clip` by the model's scale and multiply its frame rate (2x and 2x by default).

    model: a shipped model name ("default", see `stvsr models`) or a .safetensors path; the size
        grows by the model's scale (2 or 4).
    device / device_index: "auto" picks CUDA, then MPS, then the CPU; "cuda:1" or device_index=1
        picks a GPU (as in the CLI); a non-zero device_index off CUDA is refused.
    fp16 / bf16: on/off precision flags (vs-mlrt's): half precision on CUDA, bfloat16 networks.
    precision: the same as one setting, "auto" (fp16 on CUDA, bf16 on CPUs with AMX or
        AVX512-BF16, else fp32), "fp32", "bf16" or "fp16"; give it or the flags, not both.
    num_streams: frames processed at once (one CUDA stream each on a GPU); <= core.num_threads.
    tile / tile_pad: low-res tile size and overlap for large frames (0: automatic above 1280x720).
    sc / sc_threshold: keep scene cuts (in-between frames of a cut are copies of the frame before).
        A source frame's own _SceneChangeNext decides for its pair where present; else the
        engine's cut measure with sc_threshold. Output frames carry _SceneChangePrev/_SceneChangeNext
        where the cuts now fall.
    exact_double: keep the duration: the last frame is held, ceil(N * factor) frames (2N at
        factor 2); False gives floor((N - 1) * factor) + 1 (2N - 1).
    matrix_in_s: YUV matrix of the input (overrides _Matrix; untagged: 709 for HD, 170m for SD).
    backend: "torch"; "torch-compile" (about 1.2x faster after ~30 s of compiling); "openvino" or
        "openvino-bf16" on the CPU (not faster than torch on our test CPU; README, Speed).
    factor_num / factor_den: output frames per source frame (as in vs-rife): 2/1 doubles the rate,
        5/2 gives 2.5x, 1/1 is spatial-only (no in-between frames). A variable-frame-rate clip
        (fps 0) takes integer factors; each frame's duration is divided by the factor.
    fps_num / fps_den: a target frame rate instead (e.g. 60000/1001); wins over the factor; needs a
        constant-rate clip. Rates below the source's are refused.
    upscale: False is temporal-only: the frames keep their size, in-between frames from M_T alone.

    Every output frame carries _DurationNum/_DurationDen (1/fps at a constant rate). Levels and
    colour tags are kept (vs_plugin.convert); values outside the nominal range (super-whites,
    sub-blacks) are clipped, as in the CLI. An alpha plane (`_Alpha`) is dropped with a warning
    naming the fix: its in-between frames cannot come from the colour frames.
    """
    if not isinstance(clip, vs.VideoNode):
        raise _error(f"clip must be a video clip (vs.VideoNode), got {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE or clip.width == 0 or clip.height == 0:
        raise _error("the clip changes format or size between frames: convert it to one format and size "
                     "first, e.g. clip.resize.Bicubic(width=W, height=H, format=vs.RGBS)")
    num_streams = _as_int("num_streams", num_streams, 1)
    if num_streams > core.num_threads:
        raise _error(f"num_streams ({num_streams}) must not exceed core.num_threads ({core.num_threads}): "
                     "lower num_streams or raise core.num_threads")
    tile, tile_pad = _as_int("tile", tile, 0), _as_int("tile_pad", tile_pad, 0)
    device_index = _as_int("device_index", device_index, 0)
    sc, exact_double = _as_bool("sc", sc), _as_bool("exact_double", exact_double)
    upscale = _as_bool("upscale", upscale)
    if isinstance(sc_threshold, bool) or not isinstance(sc_threshold, (int, float)) or not 0 < sc_threshold <= 1:
        raise _error(f"sc_threshold must be a number in (0, 1], got {sc_threshold!r}")
    factor = _fraction(factor_num, factor_den, "factor")
    fps = _fraction(fps_num, fps_den, "fps")
    if fps is not None and clip.fps == 0:
        raise _error("fps_num/fps_den need a constant frame rate, but the clip's is variable (fps 0): give "
                     "factor_num instead, or set a rate first with std.AssumeFPS")
    dev = _device(device, device_index)
    precision = _precision(precision, fp16, bf16)
    if matrix_in_s is not None and matrix_in_s not in MATRICES:
        raise _error(f"matrix_in_s must be one of {', '.join(MATRICES)}, got {matrix_in_s!r}")
    net = _load(model, dev)
    options = EngineOptions(tile=tile, tile_pad=tile_pad, scene_threshold=sc_threshold, factor=factor, fps=fps,
                            exact_double=exact_double, upscale=upscale, precision=precision, backend=backend)
    try:
        engine = Engine(net, dev, options)
        timeline = engine.timeline(clip.fps if clip.fps != 0 else None)
    except (InputError, ImportError) as e:
        raise _error(str(e)) from None
    temporal = timeline.factor != 1  # an fps target equal to the clip's rate is spatial-only too
    if timeline.factor < 1:
        raise _error(f"the target rate is {timeline.factor} times the clip's: this filter adds frames and never "
                     "drops them; lower the rate afterwards (e.g. std.SelectEvery) instead")
    if clip.fps == 0 and timeline.factor.denominator != 1:
        raise _error(f"a variable-frame-rate clip (fps 0) takes an integer factor, got {timeline.factor}: "
                     "set a rate first with std.AssumeFPS to use fps_num/fps_den or a fractional factor")
    if clip.num_frames < 2 and temporal:
        raise _error(f"the clip has {clip.num_frames} frame(s): frame interpolation needs at least 2")

    props = clip.get_frame(0).props  # rendered once: the alpha check and the colour props
    if "_Alpha" in props:
        core.log_message(vs.MESSAGE_TYPE_WARNING, ALPHA_DROPPED)
    src, back = to_rgb(clip, matrix_in_s, props)
    worker = _Worker(engine, num_streams, (src.height, src.width), capacity=4 * core.num_threads + 4)
    n_src = src.num_frames
    n_out = timeline.count(n_src)
    s = engine.scale  # the model's (net.info.scale), 1 when upscale=False
    rate = timeline.fps_out or Fraction(0)  # a variable frame rate stays variable
    blank = core.std.BlankClip(src, width=src.width * s, height=src.height * s, length=n_out,
                               fpsnum=rate.numerator, fpsden=rate.denominator, keep=True)

    def duration(own: vs.VideoFrame) -> Fraction | None:
        if rate:
            return 1 / rate
        if "_DurationNum" in own.props and own.props.get("_DurationDen"):
            return Fraction(own.props["_DurationNum"], own.props["_DurationDen"]) / timeline.factor
        return None

    def flag(frame: vs.VideoFrame) -> bool | None:
        """The clip's own word on a cut after this frame (None: let the engine measure)."""
        if not sc:
            return False
        tagged = frame.props.get("_SceneChangeNext")
        return None if tagged is None else bool(tagged)

    def request(n: int) -> vs.VideoNode:
        slot = timeline.slot(n, n_src)
        k = slot.k
        # where this frame starts or ends source frame k's run of output frames, a cut between
        # two source frames falls between two output frames: the props say so
        first = temporal and sc and k > 0 and timeline.slot(n - 1, n_src).k < k
        last = temporal and sc and n + 1 < n_out and timeline.slot(n + 1, n_src).k > k
        keys = [k - 1] * first + [k] + [k + 1] * (slot.between or last)

        def render(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
            frames = dict(zip(keys, f[1:]))
            own = frames[k]
            image = worker.render(slot, frames, flag(own) if slot.between else None)
            fout = f[0].copy()
            _write(fout, image)
            out = fout.props
            for key, value in own.props.items():
                if key not in ("_Alpha", "_DurationNum", "_DurationDen") and not (
                        temporal and key in ("_SceneChangeNext", "_SceneChangePrev")):
                    out[key] = value
            d = duration(own)
            if d is not None:
                out["_DurationNum"], out["_DurationDen"] = d.numerator, d.denominator
            if temporal:  # spatial-only keeps the source's own scene-change props, frame for frame
                out["_SceneChangePrev"] = int(first and worker.cut(k - 1, frames, flag(frames[k - 1])))
                out["_SceneChangeNext"] = int(last and worker.cut(k, frames, flag(own)))
            return fout
        return core.std.ModifyFrame(blank, [blank] + [_at(src, i, n) for i in keys], render)

    # One ModifyFrame per request inside an unordered FrameEval: callbacks of one ModifyFrame
    # never overlap, so this is what lets frames be computed concurrently (num_streams > 1).
    out = blank.std.FrameEval(request)
    global last_worker
    last_worker = worker
    return back(out)


last_worker: _Worker | None = None  # the most recent call's worker (statistics for tests)
