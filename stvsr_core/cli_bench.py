"""`stvsr bench`: speed, memory and FLOP use of the engine, with ffmpeg side by side."""
from __future__ import annotations

import json
import sys

from .bench import CONFIGS
from .registry import DEFAULT_MODEL, load_model


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r}: write it as WIDTHxHEIGHT, e.g. 480x270") from None
    if w < 16 or h < 16:
        raise ValueError(f"size {text!r}: at least 16x16")
    return w, h


def _factor(text: str):
    from .timeline import as_fraction
    return as_fraction(text, "--factors")


def add_parser(sub):
    p = sub.add_parser("bench", help="measure speed, memory and FLOP use (and ffmpeg's, side by side)")
    p.add_argument("--models", nargs="+", default=["default"],
                   help=f"shipped names or .safetensors paths (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps "
                                                    "(default: %(default)s)")
    sizes = ["480x270", "960x540"]
    p.add_argument("--sizes", nargs="+", default=sizes, help=f"low-res input sizes, WxH (default: {' '.join(sizes)})")
    p.add_argument("--frames", type=int, default=24,
                   help="input frames per run, real frames of the bundled clip (default: %(default)s)")
    p.add_argument("--runs", type=int, default=3,
                   help="timed runs after one warm-up; the median is reported (default: %(default)s)")
    p.add_argument("--backends", nargs="+", default=["torch"], choices=list(CONFIGS),
                   help="compared side by side in this run (torch: the default precision, bf16 on CPUs with AMX) "
                        "(default: torch)")
    p.add_argument("--factors", nargs="+", default=["2"],
                   help="frame-rate factors compared side by side (e.g. 2 3 4; ffmpeg runs at x2) (default: 2)")
    p.add_argument("--no-ffmpeg", action="store_true", help="skip the ffmpeg comparison")
    p.add_argument("--peer", action="store_true",
                   help="also time the peer pipeline SPAN x2 (ncnn) -> RIFE 4.25 on the same frames (needs stvsr[peers])")
    p.add_argument("--memory-lengths", nargs="*", type=int, default=[],
                   help="also stream clips of these lengths (e.g. 100 1000) and report peak memory of each "
                        "(default: none)")
    p.add_argument("--load", type=int, default=0,
                   help="busy processes started beside the measurement, each spinning one core; stvsr and "
                        "ffmpeg are timed under the same load (default: %(default)s)")
    p.add_argument("--pareto", metavar="PNG",
                   help="instead of the tables: plot output frames/s (first size) against dev-set PSNR for every "
                        "shipped model (or --models), DIS S->T, ffmpeg and, with --peer, SPAN -> RIFE "
                        "(default: not plotted)")
    dev = ["../shared/data/eval/vimeo_septuplet", "../shared/data/eval/ucf101"]
    p.add_argument("--dev-sets", nargs="+", default=dev,
                   help=f"dev-set folders scored for --pareto (default: {' '.join(dev)})")
    p.add_argument("--json", help="write the results to this JSON file (default: not written)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .bench import format_table, run_bench
    try:
        sizes = [_size(s) for s in args.sizes]
        if args.frames < 2 or args.runs < 1 or args.load < 0:
            raise ValueError("--frames must be >= 2, --runs >= 1 and --load >= 0")
        if args.pareto:
            return _pareto(args)
        models = {name: load_model(name) for name in args.models}
        result = run_bench(models, sizes, args.frames, args.runs, tuple(args.backends), args.device,
                           ffmpeg=not args.no_ffmpeg, memory_lengths=args.memory_lengths, peer=args.peer,
                           load=args.load, factors=tuple(_factor(f) for f in args.factors),
                           progress=lambda msg: print(f"stvsr bench: {msg}", file=sys.stderr))
    except (ValueError, ImportError, RuntimeError, OSError) as e:
        print(f"stvsr bench: error: {e}", file=sys.stderr)
        return 2
    result["models"] = args.models
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def _pareto(args) -> int:
    """Every point measured in this one run: speed at the first size, PSNR on the dev sets."""
    from pathlib import Path

    import torch

    from . import pareto
    from .bench import _cpu_name, busy_load, peak_gflops
    from .registry import list_models
    roots = [Path(d) for d in args.dev_sets]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise ValueError(f"--dev-sets: no such folder {missing[0]} (the dev sets are in ../shared/data/eval; "
                         "`stvsr devsets` builds the large-motion ones)")
    if not Path(args.pareto).parent.is_dir():
        raise ValueError(f"--pareto {args.pareto}: its folder does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--pareto needs matplotlib: pip install 'stvsr[bench]'") from None
    names = list_models() if args.models == ["default"] else args.models
    models = {name: load_model(name) for name in names}
    w, h = _size(args.sizes[0])
    log = lambda msg: print(f"stvsr bench: {msg}", file=sys.stderr)
    with busy_load(args.load):
        points = pareto.measure(models, roots, w, h, args.frames, args.runs, args.device, peak_gflops(),
                                args.peer, progress=log)
    machine = f"{_cpu_name()}, torch {torch.__version__}, {args.load} busy process(es) beside"
    pareto.plot(points, args.pareto, f"stvsr bench --pareto: {w}x{h} -> {2 * w}x{2 * h}, {machine}")
    sets = list(points[0]["psnr"])
    print(f"| method | output frames/s at {w}x{h} | " + " | ".join(f"{d} PSNR" for d in sets) + " |")
    print("|---|---|" + "---|" * len(sets))
    for pt in points:
        print(f"| {pt['name']} | {pt['fps_out']:.2f} | " + " | ".join(f"{pt['psnr'][d]:.2f}" for d in sets) + " |")
    print(f"wrote {args.pareto}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "input": f"{w}x{h}", "points": points}, f, indent=2)
    return 0
