"""`stvsr upsample INPUT -o OUTPUT`: the main job, and `stvsr models`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import torch
from tqdm import tqdm

from . import cli_batch
from .backends import BACKENDS
from .engine import Engine, EngineOptions, InputError
from .registry import DEFAULT_MODEL, describe_model, list_models, load_model
from .runtime import PRECISIONS, from_flags
from .timeline import Retime, as_fraction
from .video_io import (DEFAULT_FPS, DEMO_CLIP, MediaError, check_output, keeps_rotation, open_writer, read_frames,
                       upright)
from .weights import WeightsError

log = logging.getLogger("stvsr")


_DEFAULTS = EngineOptions()  # the one source of defaults, for every host: no literals here


def add_parser(sub):
    d = _DEFAULTS
    p = sub.add_parser("upsample", help="upscale a clip and raise its frame rate (x2 and x2 by default)",
                       description="Upsample a clip: frames at the model's scale (2x width and height for the "
                                   "shipped models) and --factor times the frame rate (N frames -> 2N-1 at the "
                                   "default x2), or a target rate with --fps. --factor 1 is spatial-only, "
                                   "--no-upscale temporal-only.")
    p.add_argument("input", nargs="*", default=[str(DEMO_CLIP)],
                   help="video file or folder of images (default: the bundled demo clip); several inputs, a glob "
                        "or a folder of videos write an output folder (-o)")
    p.add_argument("-o", "--output", required=True,
                   help="video file (.mp4 .mkv .mov .m4v .webm .avi) or, for numbered PNGs, a name without an "
                        "extension or an existing folder")
    p.add_argument("--model", default="default", help=f"shipped model name or .safetensors path (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--factor", default=None, metavar="N[/D]",
                   help=f"output frames per input frame: 2, 3, 4, 5/2, 2.5 (default: {d.factor}); 1 = spatial-only "
                        "(no new frames)")
    p.add_argument("--fps", default=None, metavar="NUM[/DEN]",
                   help="target OUTPUT frame rate instead of a factor: 60, 60000/1001 (59.94, 29.97, 23.976 and "
                        "23.98 mean the NTSC rates N*1000/1001); wins over --factor. (--fps used to set an image "
                        "folder's rate: that is --input-fps)")
    p.add_argument("--input-fps", default=None, metavar="NUM[/DEN]",
                   help=f"frame rate of an input that states none: a folder of images (default: {DEFAULT_FPS}; "
                        "ffmpeg's -framerate). A video's own rate is always used")
    p.add_argument("--upscale", action=argparse.BooleanOptionalAction, default=d.upscale,
                   help="--no-upscale: temporal-only, the frames keep their size (in-between frames from M_T "
                        "at the input's resolution)")
    p.add_argument("--exact-double", action="store_true", default=d.exact_double,
                   help="keep the input's duration: the last frame is held for its own period (2N frames at x2, "
                        "ceil(N*factor) in general) instead of ending on the last input frame (2N-1 at x2)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help=f"network precision (default: {d.precision}: fp16 on CUDA, bf16 on CPUs where it "
                        "measures faster than fp32, else fp32; dev-set PSNR within 0.01 dB)")
    # deprecated on/off aliases of --precision (0.1): --fp16 = fp16, --bf16 = bf16, --no-fp16/--no-bf16 = fp32
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tile", type=int, default=d.tile,
                   help=f"low-res tile size in pixels (default: {d.tile}: only for frames over 1280x720)")
    p.add_argument("--tile-pad", type=int, default=d.tile_pad,
                   help=f"low-res overlap between tiles (default: {d.tile_pad})")
    p.add_argument("--scene-threshold", type=float, default=d.scene_threshold,
                   help=f"scene-cut sensitivity (mean luma change, 0..1; default: {d.scene_threshold}); 0 turns "
                        "detection off")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads per op (default: 0: the cores split between the pairs; with "
                        "--workers 1, tuned while running to what the machine's load leaves free)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="frame pairs computed at once (default: 0, automatic: 2 on a CPU, the cores split "
                        "between them, which holds up on a busy machine; 1 on a GPU)")
    p.add_argument("--backend", default=d.backend, choices=BACKENDS,
                   help=f"{d.backend} (default); torch-compile (torch.compile: needs a C compiler, ~30 s to compile "
                        "on first use); openvino / openvino-bf16 on the CPU (pip install 'stvsr[openvino]')")
    cli_batch.add_arguments(p)
    p.set_defaults(func=run)


def add_models_parser(sub):
    p = sub.add_parser("models", help="list the shipped models")
    p.set_defaults(func=run_models)


def run_models(args) -> int:
    for name in list_models():
        meta = describe_model(name)
        tag = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{tag}: {meta.get('description', '')}")
        print(f"  config: {meta.get('config')}")
        if meta.get("backbones"):
            from .backbones.store import installed
            parts = json.loads(meta["backbones"])
            state = ", ".join(f"{p} = {n} ({'installed' if installed(n) else 'missing: stvsr fetch-backbones'})"
                              for p, n in parts.items())
            print(f"  pretrained backbones: {state}")
    if not list_models():
        print("no models shipped in this install")
    return 0


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)


def _to_rgb(x: torch.Tensor) -> np.ndarray:
    return x.mul(255).round_().byte().permute(1, 2, 0).contiguous().numpy()


class Terminated(BaseException):
    """SIGTERM (a job scheduler, `kill`), raised where the run is, so the writer cleans up as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def _forked_child():
    """A copy of this process forked while the handler is set (OpenVINO's telemetry forks one to
    post its report) must die on SIGTERM: the handler runs only between bytecodes of the main
    thread, which a fork of a threaded process can leave deadlocked, so the copy (all of our
    memory) would outlive us."""
    if signal.getsignal(signal.SIGTERM) is _terminate:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forked_child)


def run(args) -> int:
    if cli_batch.wanted(args):  # several inputs, chunks, resume, Ray
        return cli_batch.run(args)
    args.input = cli_batch.single_input(args)
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _run(args)
    except (MediaError, InputError, WeightsError) as e:
        print(f"stvsr upsample: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stvsr upsample: interrupted; no output written", file=sys.stderr)
        return 130
    except Terminated:
        print("stvsr upsample: terminated; no output written", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _number(text: str | None, option: str) -> Fraction | None:
    """--factor, --fps, --input-fps: N, NUM/DEN or a decimal, read as every host reads them
    (timeline.as_fraction: 23.976, 23.98, 29.97, 59.94 are the NTSC rates N*1000/1001)."""
    if text is None:
        return None
    try:
        return as_fraction(text.strip(), option)
    except ValueError as e:
        raise InputError(str(e)) from None


def _factor(f: Fraction) -> str:
    """The frame-rate factor for the start line: 2, 5/2, or 1.999 where an fps target gives an odd one."""
    return str(f) if f.denominator <= 8 else f"{float(f):.4g}"


def _rate(fps: Fraction) -> str:
    """A frame rate for the start and final lines: 25, 59.940 (60000/1001)."""
    return str(fps) if fps.denominator == 1 else f"{float(fps):.3f} ({fps})"


def _retime(args):
    """(factor, fps target, input rate) from the options, each checked before anything is read."""
    factor = _number(args.factor, "--factor")
    fps = _number(args.fps, "--fps")
    input_fps = _number(args.input_fps, "--input-fps")
    if fps is not None and factor is not None:
        log.warning("--factor %s ignored: --fps %s sets the output rate", args.factor, args.fps)
    return (_DEFAULTS.factor if factor is None else factor), fps, input_fps


def _precision(args) -> str:
    """--precision, or the deprecated --fp16/--bf16 on/off flags it replaces."""
    if args.fp16 is None and args.bf16 is None:
        return args.precision or _DEFAULTS.precision
    flags = from_flags(args.fp16, args.bf16)
    if args.precision is not None and args.precision != flags:
        raise InputError(f"--precision {args.precision} disagrees with the deprecated --fp16/--bf16 flag "
                         f"({flags}): give --precision alone")
    log.warning("--fp16/--bf16 are deprecated: use --precision %s", flags)
    return flags


def input_rate(src, fps, input_fps) -> Fraction:
    """The input's frame rate as every run takes it (single and chunked): the rate it states, else
    --input-fps, else 25; an fps target needs one of the first two."""
    if src.fps is None:
        if input_fps is None and fps is not None:
            what = "a folder of images" if src.path.is_dir() else "its video stream"
            raise InputError(f"{src.path}: {what} states no frame rate, which --fps (the output rate) is "
                             "relative to: give the input's rate with --input-fps RATE, or a --factor")
        return input_fps or DEFAULT_FPS
    if input_fps is not None and input_fps != src.fps:
        log.warning("--input-fps %s ignored: %s states its own rate, %s fps", input_fps, src.path, _rate(src.fps))
    return src.fps


def engine_options(args, factor, fps, precision: str) -> EngineOptions:
    """The engine's options from the command line, for the single run and the chunked one (cli_batch)."""
    return EngineOptions(tile=args.tile, tile_pad=args.tile_pad, scene_threshold=args.scene_threshold,
                         factor=factor, fps=fps, exact_double=args.exact_double, upscale=args.upscale,
                         precision=precision, backend=args.backend, workers=args.workers, threads=args.threads)


def _run(args) -> int:
    factor, fps, input_fps = _retime(args)
    precision = _precision(args)
    check_output(args.output, args.input, args.overwrite)  # before decoding and the model
    src = read_frames(args.input)
    fps_in = input_rate(src, fps, input_fps)
    temporal = Retime(factor, fps).temporal
    if temporal and src.count is not None and src.count < 2:
        raise InputError(f"{args.input}: has {src.count} frame: interpolation needs at least 2 frames "
                         "(--factor 1 upscales a single frame)")
    keep = keeps_rotation(args.output)
    turn = 0 if keep else src.rotation  # applied to the frames where the output has no display matrix
    if src.display_matrix and not keep and (src.mirrored or turn % 90):
        raise InputError(f"{args.input}: its display matrix {'mirrors' if src.mirrored else 'rotates'} "
                         f"the picture{'' if src.mirrored else f' by {turn} degrees'}, which only a video "
                         f"output keeps: write .mp4, .mov, .mkv or .webm")
    model = load_model(args.model)
    engine = Engine(model, args.device, engine_options(args, factor, fps, precision))
    timeline = engine.timeline(fps_in)
    fps_out, s = timeline.fps_out, engine.scale
    n_out = None if src.count is None else timeline.count(src.count)
    h, w = src.size
    oh, ow = (w, h) if turn % 180 else (h, w)
    rotated = f", rotated {src.rotation} degrees: {'kept' if keep else 'applied'}" if src.display_matrix else ""
    # at an fps target the timestamps place the frames: a variable-rate input's count is known at the end
    about = "about " if timeline.by_time and src.variable_rate else ""
    length = "?" if n_out is None else f"{about}{n_out} frames, {float(n_out / fps_out):.3f} s"
    print(f"stvsr: {args.input} ({w}x{h}, {src.count or '?'} frames, {_rate(fps_in)} fps) -> {args.output} "
          f"({ow * s}x{oh * s}, {length} at {_rate(fps_out)} fps, x{_factor(timeline.factor)} frame rate{rotated}) "
          f"on {engine.precision}", file=sys.stderr)
    t0 = time.time()

    def frames():
        for t, rgb in src.timed:
            timeline.add(t)
            yield _to_tensor(upright(rgb, turn))

    first = last = None
    with tqdm(total=n_out, unit="frame", desc="upsample", dynamic_ncols=True) as bar, \
            open_writer(args.output, fps_out, args.overwrite, src.path if src.audio else None,
                        src.display_matrix if keep else None, timeline.time_base(src.time_base)) as writer:
        for out in engine.run(frames(), total=src.count, progress=lambda d, n: bar.update(1), timeline=timeline):
            last = timeline.issued.popleft().time
            first = last if first is None else first
            writer.write(_to_rgb(out), last)
    if timeline.repaired:
        log.warning("%d frame(s) of %s had a missing or out-of-order timestamp: each was placed one frame "
                    "period after the previous", timeline.repaired, args.input)
    dt = time.time() - t0
    span = (last - first + 1 / fps_out) if writer.count else Fraction(0)  # to the end of the last frame
    print(f"stvsr: wrote {writer.count} frames ({float(span):.3f} s at {_rate(fps_out)} fps) in {dt:.1f} s "
          f"({writer.count / dt:.2f} frames/s), {engine.stats['scene_cuts']} scene cut(s) kept as cuts",
          file=sys.stderr)
    if src.error:  # a truncated file: the output is valid but shorter, and the caller must know
        announced = f" of {src.count} announced" if src.count else ""
        print(f"stvsr upsample: warning: {args.input}: {src.error}: wrote {writer.count} frames from its first "
              f"{timeline.n}{announced} frames to {args.output}, shorter than the input: repair or "
              "re-download the input for the rest", file=sys.stderr)
        return 3
    return 0
