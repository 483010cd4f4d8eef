"""`core.stvsr.Upsample(clip, ...)`: 2x size and 2x frame rate for VapourSynth clips.

A thin host on `stvsr_core.Engine` (no model math here): frames become tensors, each source
frame goes through M_S once (cached, shared by the two pairs it belongs to), each pair of
neighbours gives the in-between frame, and the result becomes frames again. Output frame 2k
is source frame k upscaled; 2k+1 is the frame between k and k+1 (a copy of 2k across a scene
cut); by default the last frame is repeated so the clip keeps its duration (2N frames).
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import OrderedDict

import numpy as np
import torch
import vapoursynth as vs

from stvsr_core.engine import Engine, InputError, select_device
from stvsr_core.runtime import from_flags
from stvsr_core.registry import load_model, resolve_model
from stvsr_core.scenecut import DEFAULT_THRESHOLD
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


class _SpatialCache:
    """M_S output of each source frame, computed once even when both of its pairs (and any
    number of threads) ask for it at the same time; a few recent entries are kept."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: OrderedDict[int, tuple[threading.Event, list]] = OrderedDict()
        self.lock = threading.Lock()
        self.computed = 0  # M_S calls, for tests and statistics

    def get(self, k: int, compute):
        with self.lock:
            entry = self.entries.get(k)
            owner = entry is None
            if owner:
                entry = self.entries[k] = (threading.Event(), [])
                while len(self.entries) > self.capacity:
                    oldest = next(iter(self.entries))
                    if not self.entries[oldest][0].is_set():
                        break  # never drop one that is being computed
                    self.entries.pop(oldest)
            else:
                self.entries.move_to_end(k)
        event, box = entry
        if owner:
            try:
                box.append(compute())
                self.computed += 1
            except BaseException as e:
                box.append(e)
                with self.lock:
                    self.entries.pop(k, None)
                raise
            finally:
                event.set()
        event.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


class _Worker:
    """The engine behind one Upsample call: slots for concurrent inference (one CUDA stream
    each when num_streams > 1), the M_S cache, and the frame <-> tensor conversions."""

    def __init__(self, engine: Engine, num_streams: int, size: tuple[int, int], capacity: int):
        self.engine, self.size = engine, size
        self.cache = _SpatialCache(capacity)
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

    def spatial(self, k: int, frame: vs.VideoFrame):
        def compute():
            with self._slot():
                L = self.engine.prepare(self._tensor(frame), k, self.size)
                return L, self.engine.spatial(L)
        return self.cache.get(k, compute)

    def middle(self, k: int, f0: vs.VideoFrame, f1: vs.VideoFrame) -> torch.Tensor:
        L0, H0 = self.spatial(k, f0)
        L1, H1 = self.spatial(k + 1, f1)
        with self._slot():
            return self.engine.output(self.engine.middle(L0, L1, H0, H1), self.size)

    def upscaled(self, k: int, frame: vs.VideoFrame) -> torch.Tensor:
        _, H = self.spatial(k, frame)
        return self.engine.output(H, self.size)


def _write(out: vs.VideoFrame, image: torch.Tensor) -> None:
    data = image.numpy()
    for p in range(3):
        np.copyto(np.asarray(out[p]), data[p], casting="unsafe")  # float32 -> float16 for RGBH


def _props(fout: vs.VideoFrame, src: vs.VideoFrame, cut_before: bool, cut_after: bool) -> None:
    """The source frame's props (its duration already halved by std.Interleave), scene changes
    moved to where they now fall, and no `_Alpha` (see upsample)."""
    props = fout.props
    for key, value in src.props.items():
        if key not in ("_SceneChangeNext", "_SceneChangePrev", "_Alpha"):
            props[key] = value
    props["_SceneChangePrev"] = int(cut_before)
    props["_SceneChangeNext"] = int(cut_after)


def _scene_flags(src: vs.VideoNode, sc: bool, threshold: float) -> vs.VideoNode | None:
    """A clip whose frame k says whether a cut lies between source frames k and k+1: frame k's
    own `_SceneChangeNext` where it has one (a clip may carry it on some frames only, e.g. after
    a splice), else PlaneStats of 64-px-wide luma (the same measure as stvsr_core.scenecut:
    mean absolute luma difference)."""
    if not sc:
        return None
    h = max(2, round(src.height * 64 / src.width / 2) * 2)
    small = src.resize.Bilinear(64, h, format=vs.GRAYS, matrix_s="170m")
    stats = core.std.PlaneStats(small, small[1:] + small[-1])

    def flag(n, f):
        stat, own = f
        fout = stat.copy()
        tagged = own.props.get("_SceneChangeNext")
        fout.props["_SceneChangeNext"] = int(bool(tagged) if tagged is not None
                                             else stat.props["PlaneStatsDiff"] > threshold)
        return fout
    return stats.std.ModifyFrame([stats, src], flag)


def upsample(clip: vs.VideoNode, model: str = "default", device_index: int = 0, device: str = "auto",
             fp16: bool | None = None, bf16: bool | None = None, num_streams: int = 1, tile: int = 0, tile_pad: int = 32,
             sc: bool = True, sc_threshold: float = DEFAULT_THRESHOLD, exact_double: bool = True,
             matrix_in_s: str | None = None, backend: str = "torch") -> vs.VideoNode:
    """Double the size and the frame rate of `clip`.

    model: a shipped model name ("default", see `stvsr models`) or a .safetensors path.
    device / device_index: "auto" picks CUDA, then MPS, then the CPU; "cuda:1" or device_index=1
        picks a GPU (as in the CLI); a non-zero device_index off CUDA is refused.
    fp16: half precision on CUDA (default on there; not available elsewhere).
    bf16: bfloat16 networks (default on for CPUs with AMX or AVX512-BF16).
    num_streams: frames processed at once (one CUDA stream each on a GPU); <= core.num_threads.
    tile / tile_pad: low-res tile size and overlap for large frames (0: automatic above 1280x720).
    sc / sc_threshold: keep scene cuts (the in-between frame of a cut is a copy of the frame before).
    exact_double: 2N output frames, the last repeated, so the duration is kept; False gives 2N-1.
    matrix_in_s: YUV matrix of the input (overrides _Matrix; untagged: 709 for HD, 170m for SD).
    backend: "torch"; "torch-compile" (about 1.2x faster after ~30 s of compiling); "openvino" or
        "openvino-bf16" on the CPU (not faster than torch on our test CPU; README, Speed).

    Levels and colour tags are kept (vs_plugin.convert); values outside the nominal range
    (super-whites, sub-blacks) are clipped, as in the CLI. An alpha plane (`_Alpha`) is dropped
    with a warning naming the fix: its in-between frames cannot come from the colour frames.
    """
    if not isinstance(clip, vs.VideoNode):
        raise _error(f"clip must be a video clip (vs.VideoNode), got {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE or clip.width == 0 or clip.height == 0:
        raise _error("the clip changes format or size between frames: convert it to one format and size "
                     "first, e.g. clip.resize.Bicubic(width=W, height=H, format=vs.RGBS)")
    if clip.num_frames < 2:
        raise _error(f"the clip has {clip.num_frames} frame(s): frame interpolation needs at least 2")
    num_streams = _as_int("num_streams", num_streams, 1)
    if num_streams > core.num_threads:
        raise _error(f"num_streams ({num_streams}) must not exceed core.num_threads ({core.num_threads}): "
                     "lower num_streams or raise core.num_threads")
    tile, tile_pad = _as_int("tile", tile, 0), _as_int("tile_pad", tile_pad, 0)
    device_index = _as_int("device_index", device_index, 0)
    sc, exact_double = _as_bool("sc", sc), _as_bool("exact_double", exact_double)
    if isinstance(sc_threshold, bool) or not isinstance(sc_threshold, (int, float)) or not 0 < sc_threshold <= 1:
        raise _error(f"sc_threshold must be a number in (0, 1], got {sc_threshold!r}")
    dev = _device(device, device_index)
    if fp16 is not None:
        fp16 = _as_bool("fp16", fp16)
        if fp16 and dev.type != "cuda":
            raise _error(f"fp16 needs a CUDA device, but this filter runs on {dev.type}: drop fp16=True")
    if bf16 is not None:
        bf16 = _as_bool("bf16", bf16)
    if matrix_in_s is not None and matrix_in_s not in MATRICES:
        raise _error(f"matrix_in_s must be one of {', '.join(MATRICES)}, got {matrix_in_s!r}")
    props = clip.get_frame(0).props  # rendered once: the alpha check and the colour props
    if "_Alpha" in props:
        core.log_message(vs.MESSAGE_TYPE_WARNING, ALPHA_DROPPED)
    src, back = to_rgb(clip, matrix_in_s, props)
    net = _load(model, dev)
    try:
        engine = Engine(net, dev, tile=tile, tile_pad=tile_pad, precision=from_flags(fp16, bf16),
                        scene_threshold=None, backend=backend)
    except (InputError, ImportError) as e:
        raise _error(str(e)) from None
    worker = _Worker(engine, num_streams, (src.height, src.width), capacity=4 * core.num_threads + 4)
    n_src = src.num_frames
    n_out = 2 * n_src if exact_double else 2 * n_src - 1
    s = net.scale
    fpsnum, fpsden = src.fps.numerator * 2, src.fps.denominator
    if fpsnum == 0:
        fpsden = 1  # variable frame rate stays variable; every frame's duration is halved
    blank = core.std.BlankClip(src, width=src.width * s, height=src.height * s, length=n_out,
                               fpsnum=fpsnum, fpsden=fpsden, keep=True)
    this = core.std.Interleave([src, src])[:n_out]          # output j -> source j // 2
    nxt = src[1:] + src[-1]
    following = core.std.Interleave([nxt, nxt])[:n_out]     # output j -> source j // 2 + 1
    flags = _scene_flags(src, sc, sc_threshold)
    clips = [blank, this, following]
    if flags is not None:
        fl = core.std.Interleave([flags, flags])[:n_out]
        prev = core.std.Interleave([flags[0] + flags[:-1]] * 2)[:n_out]  # output j -> flags of j//2 - 1
        clips += [fl, prev]

    def frame(n: int, f: list) -> vs.VideoFrame:
        k, odd = divmod(n, 2)
        cut_after = flags is not None and k + 1 < n_src and bool(f[3].props["_SceneChangeNext"])
        cut_before = flags is not None and not odd and k > 0 and bool(f[4].props["_SceneChangeNext"])
        # an upscaled source frame, the repeated last one, or across a cut the frame before
        if not odd or k + 1 >= n_src or cut_after:
            image = worker.upscaled(k, f[1])
        else:
            image = worker.middle(k, f[1], f[2])
        fout = f[0].copy()
        _write(fout, image)
        _props(fout, f[1], cut_before=cut_before, cut_after=cut_after and odd)
        return fout

    # One ModifyFrame per request inside an unordered FrameEval: callbacks of one ModifyFrame
    # never overlap, so this is what lets frames be computed concurrently (num_streams > 1).
    out = blank.std.FrameEval(lambda n: core.std.ModifyFrame(blank, clips, frame))
    global last_worker
    last_worker = worker
    return back(out)


last_worker: _Worker | None = None  # the most recent call's worker (statistics for tests)
