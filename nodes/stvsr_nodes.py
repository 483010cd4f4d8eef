"""ComfyUI nodes (V1 API) over stvsr_core, following the paper's Figure 1, plus one all-in-one node.

IMAGE is [B, H, W, 3] float in 0..1 with one frame per batch item; MASK is [B, H, W].
The nodes only convert layouts, place the model and report progress: the math is stvsr_core's.
"""
from __future__ import annotations

import contextlib
from fractions import Fraction

import torch

from ..stvsr_core import (DEFAULT_MODEL, Engine, EngineOptions, InputError, WeightsError, list_models,
                          load_weights, resolve_model, select_device)
from ..stvsr_core.runtime import PRECISIONS
from ..stvsr_core.runtime import resolve as resolve_runtime
from ..stvsr_core.scenecut import is_cut
from ..stvsr_core.timeline import Retime, Timeline, as_fraction
from . import host

CATEGORY = "video/stvsr"
MODEL_TYPE = "STVSR_MODEL"
DEFAULTS = EngineOptions()  # the widgets' defaults: the one source, shared with the CLI and the filter
FACTOR = int(DEFAULTS.factor)
TILE = ("INT", {"default": DEFAULTS.tile, "min": 0, "max": 4096, "step": 32,
                "tooltip": "low-res tile size; 0 tiles only frames over 1280x720"})
SCENE_THRESHOLD = ("FLOAT", {"default": DEFAULTS.scene_threshold or 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                             "tooltip": "pairs that differ more than this are a scene cut (no morphing); 0: off"})
MULTIPLIER_TIP = "output frames per input frame: 2 doubles the frame rate, 3 triples it"
MODEL_IN = (MODEL_TYPE, {"tooltip": "from Load STVSR Model"})
VIDEO_IN = ("IMAGE", {"tooltip": "the frames of a video, in order (at least 2)"})
PROMPT_IDS = {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}


class STVSRModel:
    """What flows on an STVSR_MODEL wire: the network on the CPU plus where and how to run it."""

    def __init__(self, model, device: torch.device, precision: str, name: str):
        self.model, self.device, self.precision, self.name = model, device, precision, name

    @property
    def scale(self) -> int:
        """The model's upscaling factor, from its descriptor."""
        return self.model.info.scale

    def options(self, **options) -> EngineOptions:
        return EngineOptions(precision=self.precision, **options)

    @contextlib.contextmanager
    def engine(self, frame_hw: tuple[int, int], options: EngineOptions | None = None, node: str = "STVSR"):
        """The model on its device only while a node runs; back on the CPU afterwards."""
        h, w = frame_hw
        params = sum(p.numel() * p.element_size() for p in self.model.parameters())
        # activations: the widest stages (F and R at high resolution) hold roughly 50 floats per
        # high-res pixel; an estimate for free_memory, not a limit
        host.free_memory(params + h * w * 4 * 50 * self.scale ** 2, self.device)
        try:
            engine = Engine(self.model, self.device, options or self.options())
        except InputError as e:  # the core's checks of the options, in the node's words
            raise InputError(f"{node}: {e}") from None
        try:
            yield engine
        finally:
            self.model.to("cpu")
            host.soft_empty_cache()


# -- conversions and checks ---------------------------------------------------------------------
def _frames(images: torch.Tensor, what: str = "images", min_frames: int = 1) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [B, 3, H, W] view, after checking it is an RGB batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InputError(f"{what}: expected an IMAGE batch [frames, height, width, 3], got "
                         f"{tuple(images.shape) if hasattr(images, 'shape') else type(images).__name__}")
    if images.shape[-1] != 3:
        raise InputError(f"{what}: has {images.shape[-1]} channels; STVSR needs RGB (3): drop the alpha "
                         "channel or convert the image to RGB first")
    if images.shape[0] < min_frames:
        raise InputError(f"{what}: got {images.shape[0]} frame(s); frame interpolation needs at least "
                         f"{min_frames} frames: pass a video batch, not a single image")
    return images.movedim(-1, 1)


def _image(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """[B, 3, H, W] -> IMAGE. Intermediate streams stay unclamped, so that wiring the separate
    nodes reproduces the all-in-one node exactly (previews and SaveImage clip them anyway)."""
    x = x.clamp(0, 1) if clamp else x
    return x.movedim(1, -1).float().cpu()


def _with_smaller_tiles(run, tile: int):
    """Retry on out-of-memory with half the tile size, as ComfyUI's own upscale node does."""
    while True:
        try:
            return run(tile)
        except host.OOM_ERRORS:
            host.soft_empty_cache()
            tile = 512 if tile == 0 else tile // 2
            if tile < 64:
                raise
            host.log.warning("stvsr: out of memory, retrying with %d px tiles", tile)


UPSCALE_MODEL = ("UPSCALE_MODEL", {"tooltip": "optional: your own upscaler (Load Upscale Model) becomes M_S; "
                                   "it must upscale by the STVSR model's factor (x2 for the shipped models)"})
MODEL_TOOLTIP = ("stvsr-fast-v2 (the default): small CPU networks, M_S distilled from SPAN, + dense DIS optical "
                 "flow. stvsr-fast-v3: the same with an occlusion test on the flows, a little slower and no better "
                 "on real motion (docs/MODELS.md). stvsr-fast: older, about 15% faster, weaker on large motion. "
                 "stvsr-lite: slower, between them. stvsr-quality: the pretrained SPAN x2 and RIFE 4.25 backbones with F and R "
                 "trained on them (best, slowest; install its backbones once with `stvsr fetch-backbones`). "
                 "stvsr-realtime: one stream, no fusion or refinement: about as fast as ffmpeg, a little worse "
                 "than stvsr-fast.")


def _with_upscaler(stvsr_model: STVSRModel, upscale_model, node: str) -> STVSRModel:
    """The same STVSR model with the user's upscale model (a spandrel descriptor) as M_S."""
    if upscale_model is None:
        return stvsr_model
    from ..stvsr_core.backbones.adapters import from_spandrel
    try:
        model = stvsr_model.model.with_spatial(from_spandrel(upscale_model))
    except ValueError as e:
        raise InputError(f"{node}: {e}") from None
    return STVSRModel(model, stvsr_model.device, stvsr_model.precision, stvsr_model.name)


def _reads_output(prompt, unique_id, slot: int) -> bool:
    """Whether a node of the workflow reads this node's output `slot` (always True outside ComfyUI)."""
    if prompt is None or unique_id is None:
        return True
    return any(v == [str(unique_id), slot] for node in prompt.values() for v in node.get("inputs", {}).values())


def _refuse_meta_batches(prompt, node: str) -> None:
    """VideoHelperSuite's Meta Batch Manager runs the workflow once per batch of frames: a node
    that makes frames between inputs would lose those between batches. Only STVSR Upsample keeps them."""
    if prompt and any(n.get("class_type") == "VHS_BatchManager" for n in prompt.values()):
        raise InputError(f"{node}: this workflow has a Meta Batch Manager, whose batches would lose the frames "
                         "between them: use STVSR Upsample with meta_batch wired to the manager")


def _check_device(device: torch.device) -> None:
    """Refuse a device this machine lacks up front (ComfyUI's memory manager fails on it with a
    KeyError): the core's check (select_device), in the node's words."""
    try:
        select_device(device)
    except InputError:
        raise InputError(f"Load STVSR Model: device is {device.type}, but this machine has no {device.type.upper()} "
                         f"device (ComfyUI runs on {host.torch_device()}): set device to auto") from None


def _model_choices() -> list[str]:
    shipped = list_models()
    return ([DEFAULT_MODEL] if DEFAULT_MODEL in shipped else []) + \
        [m for m in shipped if m != DEFAULT_MODEL] + host.user_model_files()


# -- nodes ----------------------------------------------------------------------------------------
class LoadSTVSRModel:
    DESCRIPTION = "Loads a shipped STVSR model or a .safetensors file from ComfyUI/models/stvsr."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("stvsr_model",)
    OUTPUT_TOOLTIPS = ("the model and where it runs: connect it to the STVSR nodes",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (_model_choices(), {"tooltip": MODEL_TOOLTIP}),
                             "device": (["auto", "cpu", "cuda", "mps"], {"default": "auto", "tooltip":
                                        "auto: ComfyUI's device (the GPU, or the CPU under --cpu)"}),
                             "precision": (list(PRECISIONS), {"default": DEFAULTS.precision, "tooltip":
                                           "auto: fp16 on CUDA, bf16 on CPUs with AMX/AVX512-BF16, else fp32"})},
                "optional": {"upscale_model": UPSCALE_MODEL}}

    def load(self, model_name, device="auto", precision="auto", upscale_model=None):
        path = host.user_model_path(model_name) if model_name.endswith(".safetensors") else None
        try:
            model = load_weights(path or resolve_model(model_name))
        except WeightsError as e:
            raise WeightsError(f"Load STVSR Model: {e}") from None
        dev = host.torch_device() if device == "auto" else torch.device(device)
        _check_device(dev)
        try:
            resolve_runtime(dev, precision)  # the core's one check of device and precision
        except InputError as e:
            raise InputError(f"Load STVSR Model: {e}") from None
        return (_with_upscaler(STVSRModel(model, dev, precision, model_name), upscale_model, "Load STVSR Model"),)


class STVSRSpatialUpscale:
    DESCRIPTION = "M_S: every frame upscaled on its own, by the model's factor (2x for the shipped models)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("every frame at the model's factor times the width and height",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "images": ("IMAGE", {"tooltip": "frames or images"}),
                             "tile": TILE}}

    def upscale(self, stvsr_model, images, tile=DEFAULTS.tile):
        x = _frames(images)
        s = stvsr_model.scale
        bar = host.Progress(x.shape[0])

        def run(tile):
            out = torch.empty((x.shape[0], x.shape[2] * s, x.shape[3] * s, 3))
            with stvsr_model.engine(x.shape[-2:], stvsr_model.options(tile=tile), "Spatial Upscale") as eng:
                for i in range(x.shape[0]):
                    out[i] = _image(eng.upscale(x[i:i + 1]))[0]
                    bar.update(1)
            return out

        return (_with_smaller_tiles(run, tile),)


def _retime(node: str, multiplier, fps=None, exact_double=False) -> Retime:
    """The core's retiming for a node's widgets (errors in the node's words)."""
    try:
        return Retime(multiplier, fps, exact_double)
    except ValueError as e:
        raise InputError(f"{node}: {e}") from None


def _timeline(node: str, retime: Retime | int, fps_in=None) -> Timeline:
    """The core's output timeline of a clip at fps_in (a multiplier alone: no rate needed)."""
    try:
        return Timeline(retime if isinstance(retime, Retime) else _retime(node, retime), fps_in)
    except ValueError as e:
        raise InputError(f"{node}: {e}") from None


def _multiplier(minimum: int, more: str = "") -> tuple:
    return ("INT", {"default": FACTOR, "min": minimum, "max": 16, "tooltip": MULTIPLIER_TIP + more})


class STVSRFrameInterpolate:
    DESCRIPTION = ("M_T: N frames -> (N-1)*multiplier+1 frames at the same size (2N-1 at x2); scene cuts repeat "
                   "a frame instead of morphing.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("(N-1)*multiplier+1 frames: multiplier-1 in-between frames after each input frame but "
                       "the last",)
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "images": VIDEO_IN,
                             "scene_threshold": SCENE_THRESHOLD},
                "optional": {"multiplier": _multiplier(2)},
                "hidden": PROMPT_IDS}

    def interpolate(self, stvsr_model, images, scene_threshold=DEFAULTS.scene_threshold, multiplier=FACTOR,
                    prompt=None, unique_id=None):
        _refuse_meta_batches(prompt, "Frame Interpolate")
        x = _frames(images, min_frames=2)
        n = x.shape[0]
        timeline = _timeline("Frame Interpolate", multiplier)
        out = torch.empty((timeline.count(n),) + tuple(images.shape[1:]))
        bar = host.Progress(out.shape[0])
        cuts, mids = {}, {}
        with stvsr_model.engine(x.shape[-2:], node="Frame Interpolate") as eng:
            for j in range(out.shape[0]):
                s = timeline.slot(j, n)
                a, b = x[s.k:s.k + 1], x[s.k + 1:s.k + 2]
                if s.between and s.k not in cuts:
                    cuts[s.k] = is_cut(a, b, scene_threshold)
                if s.between and not cuts[s.k]:  # M_T at t = i/multiplier, one estimate per pair
                    if s.k not in mids:
                        times = [float(q.t) for q in timeline.slots_of_pair(s.k, n)]
                        mids = {s.k: dict(zip(times, eng.interpolate_frames(a, b, times)))}
                    out[j] = _image(mids[s.k][float(s.t)])[0]
                else:  # a source frame, or an in-between slot of a cut pair: the frame before
                    out[j] = images[s.k]
                bar.update(1)
        return (out,)


class STVSRDualStreamUpsample:
    DESCRIPTION = ("Both streams of the paper: the upscaled input frames (M_S), and for every in-between "
                   "frame H_st (upscale, then interpolate) and H_ts (interpolate, then upscale); multiplier-1 "
                   "in-between frames per pair of input frames.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "MASK")
    RETURN_NAMES = ("upscaled_frames", "H_st", "H_ts", "cue")
    OUTPUT_TOOLTIPS = ("the N input frames upscaled by the model's factor (M_S)",
                       "(N-1)*(multiplier-1) in-between frames, pair by pair: upscale, then interpolate (unclamped)",
                       "(N-1)*(multiplier-1) in-between frames, pair by pair: interpolate, then upscale (unclamped)",
                       "for each in-between frame, where DIS's two warped frames disagree (0: they agree): "
                       "Fuse Streams needs it for models whose F reads it (stvsr-fast-v3, stvsr-fast-v2, stvsr-quality); "
                       "all zeros for the others")
    FUNCTION = "streams"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "images": VIDEO_IN,
                             "tile": TILE},
                "optional": {"upscale_model": UPSCALE_MODEL, "multiplier": _multiplier(2)},
                "hidden": PROMPT_IDS}

    def streams(self, stvsr_model, images, tile=DEFAULTS.tile, upscale_model=None, multiplier=FACTOR,
                prompt=None, unique_id=None):
        _refuse_meta_batches(prompt, "Dual-Stream Upsample")
        stvsr_model = _with_upscaler(stvsr_model, upscale_model, "Dual-Stream Upsample")
        x = _frames(images, min_frames=2)
        s = stvsr_model.scale
        n, h, w = x.shape[0], x.shape[2] * s, x.shape[3] * s
        timeline = _timeline("Dual-Stream Upsample", multiplier)
        pairs = [timeline.slots_of_pair(k, n) for k in range(n - 1)]
        m = sum(len(p) for p in pairs)
        bar = host.Progress(n - 1)

        def run(tile):
            sr, st, ts = torch.empty((n, h, w, 3)), torch.empty((m, h, w, 3)), torch.empty((m, h, w, 3))
            cue = torch.zeros((m, h, w))
            i = 0
            with stvsr_model.engine(x.shape[-2:], stvsr_model.options(tile=tile), "Dual-Stream Upsample") as eng:
                prev = eng.upscale(x[0:1])
                sr[0] = _image(prev)[0]
                for k, slots in enumerate(pairs):
                    cur = eng.upscale(x[k + 1:k + 2])  # each frame through M_S once
                    times = [float(slot.t) for slot in slots]  # one M_T estimate for all of them
                    for H_st, H_ts, c in eng.streams(x[k:k + 1], x[k + 1:k + 2], prev, cur, times, cue=True):
                        st[i], ts[i] = _image(H_st, False)[0], _image(H_ts, False)[0]
                        if c is not None:
                            cue[i] = c[0, 0].float().cpu()
                        i += 1
                    sr[k + 1] = _image(cur)[0]
                    prev = cur
                    bar.update(1)
            return sr, st, ts, cue

        return _with_smaller_tiles(run, tile)


class STVSRFuseStreams:
    DESCRIPTION = "F: blends H_st and H_ts with two predicted masks, H_F = M_st*H_st + M_ts*H_ts."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "MASK")
    RETURN_NAMES = ("H_F", "M_st", "M_ts")
    OUTPUT_TOOLTIPS = ("the fused in-between frames", "the weight of H_st per pixel", "the weight of H_ts per pixel")
    FUNCTION = "fuse"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "H_st": ("IMAGE", {"tooltip": "H_st of Dual-Stream Upsample"}),
                             "H_ts": ("IMAGE", {"tooltip": "H_ts of Dual-Stream Upsample"})},
                "optional": {"cue": ("MASK", {"tooltip": "cue of Dual-Stream Upsample: needed by models whose F "
                                                         "reads DIS's warp error (stvsr-fast-v3, stvsr-fast-v2, stvsr-quality)"})}}

    def fuse(self, stvsr_model, H_st, H_ts, cue=None):
        a, b = _frames(H_st, "H_st"), _frames(H_ts, "H_ts")
        if a.shape != b.shape:
            raise InputError(f"Fuse Streams: H_st is {tuple(H_st.shape)} but H_ts is {tuple(H_ts.shape)}: "
                             "connect both outputs of the same Dual-Stream Upsample node")
        if cue is not None and tuple(cue.shape) != tuple(H_st.shape[:3]):
            raise InputError(f"Fuse Streams: the cue is {tuple(cue.shape)} but the streams are "
                             f"{tuple(H_st.shape[:3])}: connect all three outputs of the same Dual-Stream Upsample node")
        if cue is None and stvsr_model.model.info.needs_cue:
            raise InputError("Fuse Streams: this model's F also reads DIS's warp error: connect Dual-Stream "
                             "Upsample's cue output to the cue input")
        n, s = a.shape[0], stvsr_model.scale
        out, m_st, m_ts = torch.empty(H_st.shape), torch.empty(H_st.shape[:3]), torch.empty(H_st.shape[:3])
        bar = host.Progress(n)
        with stvsr_model.engine((a.shape[2] // s, a.shape[3] // s), node="Fuse Streams") as eng:
            for i in range(n):
                try:
                    c = None if cue is None else cue[i][None, None].to(a.dtype)
                    M1, M2, H_F = eng.fuse(a[i:i + 1], b[i:i + 1], c)
                except InputError as e:
                    raise InputError(f"Fuse Streams: {e}") from None
                out[i], m_st[i], m_ts[i] = _image(H_F, False)[0], M1[0, 0].float().cpu(), M2[0, 0].float().cpu()
                bar.update(1)
        return out, m_st, m_ts


class STVSRRefine:
    DESCRIPTION = "R: sharpens a fused frame, H_R = R(H_F) + H_F."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("the refined frames",)
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "images": ("IMAGE", {"tooltip": "H_F of Fuse Streams"})}}

    def refine(self, stvsr_model, images):
        x = _frames(images)
        s = stvsr_model.scale
        out = torch.empty(images.shape)
        bar = host.Progress(x.shape[0])
        with stvsr_model.engine((x.shape[2] // s, x.shape[3] // s), node="Refine") as eng:
            for i in range(x.shape[0]):
                out[i] = _image(eng.refine(x[i:i + 1]))[0]
                bar.update(1)
        return (out,)


class STVSRInterleave:
    DESCRIPTION = ("Puts the in-between frames between the upscaled input frames: N frames and (N-1)*(m-1) "
                   "in-between frames (Dual-Stream Upsample's layout at multiplier m) -> (N-1)*m+1. With the "
                   "low-res source frames connected, pairs across a scene cut repeat the earlier frame.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("(N-1)*m+1 frames: frame, m-1 in-between frames, frame, ...",)
    FUNCTION = "interleave"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"frames": ("IMAGE", {"tooltip": "N frames (upscaled_frames of Dual-Stream Upsample)"}),
                             "in_between": ("IMAGE", {"tooltip": "(N-1)*(multiplier-1) frames, pair by pair "
                                                                 "(from Refine or Fuse Streams)"})},
                "optional": {"source": ("IMAGE", {"tooltip": "the low-res input frames, for scene cuts"}),
                             "scene_threshold": SCENE_THRESHOLD}}

    def interleave(self, frames, in_between, source=None, scene_threshold=DEFAULTS.scene_threshold):
        _frames(frames, "frames", 2), _frames(in_between, "in_between")
        n, m = frames.shape[0], in_between.shape[0]
        if m % (n - 1) or m == 0 or in_between.shape[1:] != frames.shape[1:]:
            raise InputError(f"Interleave: {n} frames need (multiplier-1) x {n - 1} in-between frames of size "
                             f"{tuple(frames.shape[1:3])} (the outputs of one Dual-Stream Upsample); got {m} of "
                             f"{tuple(in_between.shape[1:3])}")
        timeline = _timeline("Interleave", m // (n - 1) + 1)  # the multiplier the counts imply
        src = _frames(source, "source") if source is not None else None
        out = torch.empty((timeline.count(n),) + tuple(frames.shape[1:]))
        i = 0
        for j in range(out.shape[0]):
            s = timeline.slot(j, n)
            if not s.between:
                out[j] = frames[s.k]
                continue
            cut = src is not None and is_cut(src[s.k:s.k + 1], src[s.k + 1:s.k + 2], scene_threshold)
            out[j] = frames[s.k] if cut else in_between[i]
            i += 1
        return (out,)


class STVSRUpsample:
    DESCRIPTION = ("All in one: N frames -> (N-1)*multiplier+1 frames (2N-1 at the default x2), upscaled by the "
                   "model's factor; the frame rate follows (or a target frame rate sets it). multiplier 1: "
                   "spatial-only; upscale off: temporal-only. For long clips, VideoHelperSuite's Meta Batch "
                   "Manager feeds it a batch at a time (wire meta_batch).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "frame_rate")
    OUTPUT_TOOLTIPS = ("(N-1)*multiplier+1 frames (N*multiplier with exact_double), upscaled by the model's factor "
                       "unless upscale is off",
                       "the output's frame rate: the input's times multiplier, or target_fps")
    FUNCTION = "upsample"
    _carry = None  # (the last input frame of the previous meta batch, source frames so far)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"stvsr_model": MODEL_IN, "images": VIDEO_IN,
                             "scene_threshold": SCENE_THRESHOLD,
                             "tile": TILE,
                             "exact_double": ("BOOLEAN", {"default": DEFAULTS.exact_double, "tooltip":
                                                          "keep the duration: N*multiplier frames, the last held "
                                                          "(2N instead of 2N-1 at x2)"})},
                "optional": {"frame_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.001,
                                                      "tooltip": "the input's frames per second (wire fps of Get "
                                                                 "Video Components here); 0: from video_info"}),
                             "video_info": ("VHS_VIDEOINFO", {"tooltip": "VideoHelperSuite's video info: gives "
                                                                         "the frame rate when frame_rate is 0"}),
                             "meta_batch": ("VHS_BatchManager", {"tooltip": "long clips: the Meta Batch Manager "
                                                                            "that also feeds Load Video and Video "
                                                                            "Combine (VideoHelperSuite)"}),
                             "multiplier": _multiplier(1, "; 1: spatial-only (the same frame rate)"),
                             "target_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.001,
                                                      "tooltip": "an output frame rate instead of the multiplier "
                                                                 "(e.g. 59.94 from 23.976: 5 frames per 2); needs "
                                                                 "the input's rate; 0: off"}),
                             "upscale": ("BOOLEAN", {"default": DEFAULTS.upscale, "tooltip":
                                                     "off: temporal-only, the frames keep their size (in-between "
                                                     "frames from M_T)"})},
                "hidden": PROMPT_IDS}

    def upsample(self, stvsr_model, images, scene_threshold=DEFAULTS.scene_threshold, tile=DEFAULTS.tile,
                 exact_double=DEFAULTS.exact_double, frame_rate=0.0, video_info=None, meta_batch=None,
                 multiplier=FACTOR, target_fps=0.0, upscale=DEFAULTS.upscale, prompt=None, unique_id=None):
        carry = self._previous_batch(meta_batch, prompt, exact_double)
        target = _typed_rate(target_fps)
        retime = _retime("STVSR Upsample", multiplier, target, exact_double)
        x = _frames(images, min_frames=2 if carry is None and retime.temporal else 1)  # spatial-only: 1 will do
        rate = _source_rate(frame_rate, video_info, _reads_output(prompt, unique_id, 1) or target is not None,
                            target is not None)
        timeline = _timeline("STVSR Upsample", retime, rate)
        first, done = (carry[1] - 1, carry[1]) if carry is not None else (0, 0)  # source frame of x[0], frames out
        if carry is not None:  # its output frame went out with the previous batch
            x = torch.cat([carry[0], x])
        n = first + x.shape[0]  # source frames so far
        # this run's (or batch's) slice of the one timeline: the slots after the previous batch's last frame
        lo, hi = timeline.count(done), timeline.count(n)
        s = stvsr_model.scale if upscale else 1
        # one preallocated float32 CPU tensor: never several copies of a long clip
        out = torch.empty((hi - lo, x.shape[2] * s, x.shape[3] * s, 3))

        def run(tile):
            bar = host.Progress(hi - lo)
            opts = stvsr_model.options(tile=tile, scene_threshold=scene_threshold or None, factor=multiplier,
                                       fps=target, exact_double=exact_double, upscale=upscale)
            with stvsr_model.engine(x.shape[-2:], opts, "STVSR Upsample") as eng:
                if meta_batch is None:  # one clip: the core's streaming run
                    frames = eng.run((x[k] for k in range(n)), total=n, fps_in=rate,
                                     progress=lambda d, t: bar.update(1))
                else:  # a batch: its slots of the whole clip's timeline, by random access
                    acc = eng.access(size=tuple(x.shape[-2:]), capacity=4)
                    frames = (acc.render(timeline.slot(j, n), lambda k: x[k - first]) for j in range(lo, hi))
                for i, frame in enumerate(frames):
                    out[i] = frame.movedim(0, -1)
                    if meta_batch is not None:
                        bar.update(1)
            return out

        result = _with_smaller_tiles(run, tile)
        self._carry = (x[-1:].clone(), n) if meta_batch is not None else None
        return result, float(timeline.fps_out or 0.0)

    def _previous_batch(self, meta_batch, prompt, exact_double):
        """(the last input frame of the previous meta batch, the source frames before this batch); None
        on a run's first batch or without batches."""
        if meta_batch is None:
            _refuse_meta_batches(prompt, "STVSR Upsample")
            return None
        if exact_double:
            raise InputError("STVSR Upsample: exact_double cannot be used with meta_batch (the last batch is not "
                             "known in advance): turn it off")
        # VideoHelperSuite counts the batches of a run in its manager's `requeue` input (0: the first)
        manager = (prompt or {}).get(str(meta_batch.unique_id), {})
        if manager.get("inputs", {}).get("requeue", 0) == 0:
            return None
        if self._carry is None:
            raise InputError("STVSR Upsample: a meta batch came without the one before it: queue the workflow again")
        return self._carry


def _typed_rate(value: float) -> Fraction | None:
    """A frame rate from a FLOAT (a widget keeps 3 decimals; the core reads 23.976 as 24000/1001);
    None for 0 (not given)."""
    return as_fraction(float(value), "frame rate") if value else None


def _source_rate(frame_rate: float, video_info, needed: bool, for_target: bool = False) -> Fraction | None:
    """The input's frame rate: frame_rate, else video_info's; unknown (None) only where nothing needs it."""
    info = float(video_info.get("loaded_fps", 0)) if video_info else 0.0
    if frame_rate and info and abs(frame_rate - info) > 1e-3 * info:
        raise InputError(f"STVSR Upsample: frame_rate is {frame_rate:g} but video_info says {info:g} fps: "
                         "set frame_rate to 0 to use the video's rate")
    rate = _typed_rate(frame_rate or info)
    if rate is None and needed:
        why = ("target_fps needs it (the output has target_fps frames per second of input)" if for_target
               else "the frame_rate output would be wrong")
        raise InputError(f"STVSR Upsample: the input's frame rate is unknown, so {why}: wire fps (Get Video "
                         "Components) or video_info (VideoHelperSuite's Load Video) into STVSR Upsample, or type "
                         "the rate into frame_rate")
    return rate


NODE_CLASS_MAPPINGS = {
    "LoadSTVSRModel": LoadSTVSRModel,
    "STVSRSpatialUpscale": STVSRSpatialUpscale,
    "STVSRFrameInterpolate": STVSRFrameInterpolate,
    "STVSRDualStreamUpsample": STVSRDualStreamUpsample,
    "STVSRFuseStreams": STVSRFuseStreams,
    "STVSRRefine": STVSRRefine,
    "STVSRInterleave": STVSRInterleave,
    "STVSRUpsample": STVSRUpsample,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadSTVSRModel": "Load STVSR Model",
    "STVSRSpatialUpscale": "Spatial Upscale (M_S)",
    "STVSRFrameInterpolate": "Frame Interpolate (M_T)",
    "STVSRDualStreamUpsample": "Dual-Stream Upsample",
    "STVSRFuseStreams": "Fuse Streams (F)",
    "STVSRRefine": "Refine (R)",
    "STVSRInterleave": "Interleave Frames (STVSR)",
    "STVSRUpsample": "STVSR Upsample",
}
