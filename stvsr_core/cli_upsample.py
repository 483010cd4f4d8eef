"""`stvsr upsample INPUT -o OUTPUT`: the main job, and `stvsr models`."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import torch
from tqdm import tqdm

from .backends import BACKENDS
from .engine import Engine, EngineOptions, InputError
from .registry import DEFAULT_MODEL, describe_model, list_models, load_model
from .runtime import from_flags
from .scenecut import DEFAULT_THRESHOLD
from .video_io import (DEFAULT_FPS, DEMO_CLIP, MediaError, check_output, keeps_rotation, open_writer, read_frames,
                       upright)
from .weights import WeightsError

log = logging.getLogger("stvsr")


def add_parser(sub):
    p = sub.add_parser("upsample", help="2x width and height, 2x frame rate",
                       description="Upsample a clip: N frames -> 2N-1 frames at twice the size and frame rate.")
    p.add_argument("input", nargs="?", default=str(DEMO_CLIP),
                   help="video file or folder of images (default: the bundled demo clip)")
    p.add_argument("-o", "--output", required=True,
                   help="video file (.mp4 .mkv .mov .m4v .webm .avi) or, for numbered PNGs, a name without an "
                        "extension or an existing folder")
    p.add_argument("--model", default="default", help=f"shipped model name or .safetensors path (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="half precision (default: on for CUDA)")
    p.add_argument("--tile", type=int, default=0, help="low-res tile size in pixels (0: only for frames over 1280x720)")
    p.add_argument("--tile-pad", type=int, default=32, help="low-res overlap between tiles")
    p.add_argument("--scene-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="scene-cut sensitivity (mean luma change, 0..1); 0 turns detection off")
    p.add_argument("--exact-double", action="store_true", help="2N output frames (last repeated) instead of 2N-1")
    p.add_argument("--fps", type=Fraction, default=None, help="input frame rate for image folders (default 25)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 networks (default: on for CPUs where it measures faster than fp32; dev-set PSNR within 0.01 dB)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (default: 0, tuned while running to what the machine's load leaves free)")
    p.add_argument("--workers", type=int, default=1,
                   help="frame pairs computed at once (2: about 1.15x faster on a 2-core CPU, more memory)")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="torch (default); torch-compile (torch.compile: needs a C compiler, ~30 s to compile "
                        "on first use); openvino / openvino-bf16 on the CPU (pip install 'stvsr[openvino]')")
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


def run(args) -> int:
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


def _run(args) -> int:
    check_output(args.output, args.input, args.overwrite)  # before decoding and the model
    src = read_frames(args.input)
    if src.count is not None and src.count < 2:
        raise InputError(f"{args.input}: has {src.count} frame: interpolation needs at least 2 frames")
    keep = keeps_rotation(args.output)
    turn = 0 if keep else src.rotation  # applied to the frames where the output has no display matrix
    if src.display_matrix and not keep and (src.mirrored or turn % 90):
        raise InputError(f"{args.input}: its display matrix {'mirrors' if src.mirrored else 'rotates'} "
                         f"the picture{'' if src.mirrored else f' by {turn} degrees'}, which only a video "
                         f"output keeps: write .mp4, .mov, .mkv or .webm")
    model = load_model(args.model)
    opts = EngineOptions(tile=args.tile, tile_pad=args.tile_pad, scene_threshold=args.scene_threshold or None,
                         exact_double=args.exact_double, precision=from_flags(args.fp16, args.bf16), backend=args.backend,
                         workers=args.workers, threads=args.threads)
    engine = Engine(model, args.device, opts)
    fps_in = src.fps or args.fps or DEFAULT_FPS
    timeline = engine.timeline(fps_in)
    fps_out = timeline.fps_out
    n_out = None if src.count is None else timeline.count(src.count)
    h, w = src.size
    oh, ow = (w, h) if turn % 180 else (h, w)
    rotated = f", rotated {src.rotation} degrees: {'kept' if keep else 'applied'}" if src.display_matrix else ""
    print(f"stvsr: {args.input} ({w}x{h}, {src.count or '?'} frames, {float(fps_in):.3f} fps) -> {args.output} "
          f"({ow * 2}x{oh * 2}, {n_out or '?'} frames, {float(fps_out):.3f} fps{rotated}) on {engine.precision}",
          file=sys.stderr)
    t0 = time.time()

    def frames():
        for t, rgb in src.timed:
            timeline.add(t)
            yield _to_tensor(upright(rgb, turn))

    time_base = src.time_base / 2 if src.time_base else 1 / fps_out  # midpoints fall on half units
    with tqdm(total=n_out, unit="frame", desc="upsample", dynamic_ncols=True) as bar, \
            open_writer(args.output, fps_out, args.overwrite, src.path if src.audio else None,
                        src.display_matrix if keep else None, time_base) as writer:
        for out in engine.run(frames(), total=src.count, progress=lambda d, n: bar.update(1), timeline=timeline):
            writer.write(_to_rgb(out), timeline.issued.popleft().time)
    if timeline.repaired:
        log.warning("%d frame(s) of %s had a missing or out-of-order timestamp: each was placed one frame "
                    "period after the previous", timeline.repaired, args.input)
    dt = time.time() - t0
    print(f"stvsr: wrote {writer.count} frames in {dt:.1f} s ({writer.count / dt:.2f} frames/s), "
          f"{engine.stats['scene_cuts']} scene cut(s) kept as cuts", file=sys.stderr)
    if src.error:  # a truncated file: the output is valid but shorter, and the caller must know
        announced = f" of {src.count} announced" if src.count else ""
        print(f"stvsr upsample: warning: {args.input}: {src.error}: wrote {writer.count} frames from its first "
              f"{timeline.n}{announced} frames to {args.output}, shorter than the input: repair or "
              "re-download the input for the rest", file=sys.stderr)
        return 3
    return 0
