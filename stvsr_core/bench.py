"""`stvsr bench`: output frames/s, memory, FLOPs per stage and the share of this machine's
peak FLOP rate, side by side with ffmpeg's motion-compensated interpolation on the same frames.

All times are medians of several runs after a warm-up; everything compared is measured in the
same process run, on the same frames, so ratios hold even where absolute times drift.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from . import precision
from .backends import BACKENDS
from .engine import Engine
from .runner import TimingRunner

# what `--backends` compares: the engine's backends at their default precision, plus torch in fp32
CONFIGS = {**{b: {"backend": b} for b in BACKENDS}, "torch-fp32": {"backend": "torch", "precision": "fp32"},
           # one pair at a time, its thread count tuned to the load (the default before two pairs)
           "torch-1-worker": {"backend": "torch", "workers": 1},
           # one pair on every core, whatever the load: what the thread tuner (threads.py) is measured against
           "torch-fixed-threads": {"backend": "torch", "workers": 1, "threads": torch.get_num_threads()}}
from .flops import stage_flops
from .tiling import pad_to_multiple
from .video_io import DEMO_CLIP

# frames 12..55 of the bundled clip are one shot (cuts after 9 and 55): no cut skews the timing
FIRST_FRAME = 12
FFMPEG_FILTER = "minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1,scale={w}:{h}:flags=lanczos"


def real_frames(width: int, height: int, count: int, path: Path = DEMO_CLIP, first: int = FIRST_FRAME):
    """`count` real frames resized (Lanczos) to width x height, as [3, H, W] float tensors; the
    clip is looped (forwards, then backwards) when more frames are asked for than it has."""
    with av.open(str(path)) as c:
        shot = [f.to_image().convert("RGB") for f in c.decode(video=0)][first:]
    cycle = shot + shot[-2:0:-1]
    out = []
    for i in range(count):
        img = cycle[i % len(cycle)].resize((width, height), Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    return out


def median_time(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@contextlib.contextmanager
def busy_load(n: int):
    """n busy processes beside the measurement (each spins one core), as other work on a shared
    machine would; stvsr and ffmpeg are then timed under the same load."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3 if n else 0)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def peak_gflops(n: int = 2048, runs: int = 10) -> float:
    """This machine's fp32 peak as PyTorch reaches it: the fastest of several large matrix
    products (a peak, so the best run, not the median: other load only slows it down)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


class PeakRSS:
    """Peak resident memory of this process during a block, in MiB (Linux: VmHWM, reset on entry)."""

    def __enter__(self):
        self.reset = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.mib = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.mib = int(line.split()[1]) / 1024
        except OSError:
            import resource
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def stage_seconds(engine: Engine, L0: torch.Tensor, L1: torch.Tensor, runs: int) -> dict:
    """Median time of each step for one pair of padded low-res frames, run by the composition
    itself (DualStream.middle) through the engine's runner, timed around each step."""
    m = engine.model
    timer = TimingRunner(engine.runner)
    for _ in range(runs + 1):  # the first is a warm-up
        H0, H1 = m.spatial(L0, timer), m.spatial(L1, timer)
        m.middle(L0, L1, H0, H1, 0.5, run=timer)
    return {step: statistics.median(ts[2:] if step == "M_S" else ts[1:]) for step, ts in timer.seconds.items()}


def ffmpeg_fps(frames: list, fps: Fraction, runs: int) -> dict | None:
    """ffmpeg minterpolate (mci, aobmc, bidir, vsbmc) + Lanczos 2x on the same frames, from a
    lossless file (decoding it is part of ffmpeg's time, as reading frames is part of ours)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    h, w = frames[0].shape[-2:]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.mkv"
        with av.open(str(src), "w") as c:
            s = c.add_stream("ffv1", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for f in frames:
                img = (f.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
                c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            c.mux(s.encode())
        vf = FFMPEG_FILTER.format(fps=fps * 2, w=2 * w, h=2 * h)
        cmd = [exe, "-nostdin", "-v", "error", "-stats", "-i", str(src), "-vf", vf, "-f", "null", "-"]
        counted = {}

        def run():
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            counted["frames"] = int(re.findall(r"frame=\s*(\d+)", r.stderr)[-1])
        seconds = median_time(run, runs)
    version = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"fps_out": counted["frames"] / seconds, "frames_out": counted["frames"], "seconds": seconds,
            "filter": vf, "version": version}


def peer_fps(frames: list, runs: int) -> dict:
    """The peer pipeline a user would pick instead, streamed like the engine: SPAN x2 (ncnn, CPU)
    once per input frame, then RIFE 4.25 at high resolution once per pair (S->T)."""
    from .backbones.peers import PeerPipeline
    peer = PeerPipeline()
    L = [f[None] for f in frames]

    def job():
        with torch.inference_mode():
            prev = peer.M_S(L[0])
            for x in L[1:]:
                cur = peer.M_S(x)
                peer.M_T(prev, cur)
                prev = cur
    seconds = median_time(job, runs)
    n_out = 2 * len(frames) - 1
    return {"fps_out": n_out / seconds, "frames_out": n_out, "seconds": seconds,
            "pipeline": "SPAN x2 (ncnn, fp32 CPU) -> RIFE 4.25 (torch) at high resolution"}


def bench_size(model, width: int, height: int, frames_in: int, runs: int, backend: str, device: str,
               peak: float, factor=2) -> dict:
    frames = real_frames(width, height, frames_in)
    engine = Engine(model, device, factor=factor, **CONFIGS[backend])
    n_out = engine.timeline().count(frames_in)

    def job():
        for _ in engine.run(iter(frames), total=frames_in):
            pass
    with PeakRSS() as mem:
        seconds = median_time(job, runs)
    L = [pad_to_multiple(f[None], model.size_multiple) for f in frames[:2]]
    times = stage_seconds(engine, L[0], L[1], runs=max(3, runs))
    flops = stage_flops(model, width, height)
    stages = {}
    for name, t in times.items():
        f = flops.get(name)
        # per output frame at x2: every input frame goes through M_S once, for every second
        # output frame; the in-between frame's steps run once per in-between frame, likewise
        per_out = None if f is None else f / 2
        stages[name] = {"gflop_per_output_frame": None if per_out is None else per_out / 1e9,
                        "ms_per_call": 1000 * t,
                        "gflop_per_s": None if f is None else f / t / 1e9,
                        "fraction_of_peak": None if f is None else f / t / 1e9 / peak}
    conv = [n for n in ("M_S", "M_S (T->S)", "F", "R") if flops.get(n)]
    conv_flops = sum(flops[n] for n in conv)  # per pair: one source frame's M_S, one in-between frame
    conv_time = sum(times[n] for n in conv)
    s = engine.scale
    return {"runs_on": engine.precision, "input": f"{width}x{height}", "output": f"{s * width}x{s * height}",
            "frames_in": frames_in,
            "factor": str(engine.retime.factor), "frames_out": n_out, "seconds": seconds, "fps_out": n_out / seconds,
            "peak_rss_mib": mem.mib,
            "stages": stages, "conv_stages_fraction_of_peak": conv_flops / conv_time / 1e9 / peak,
            "frames": frames}


def memory_by_length(model, width: int, height: int, lengths: list[int], backend: str, device: str) -> dict:
    """Peak memory for clips of each length, streamed as a decoder would feed them."""
    frames = real_frames(width, height, 64)
    engine = Engine(model, device, **CONFIGS[backend])
    out = {}
    for n in lengths:
        stream = (frames[i % len(frames)] for i in range(n))
        with PeakRSS() as mem:
            t = time.perf_counter()
            count = sum(1 for _ in engine.run(stream, total=n))
            t = time.perf_counter() - t
        out[str(n)] = {"frames_out": count, "peak_rss_mib": mem.mib, "seconds": t}
    return out


def run_bench(models: dict, sizes=((480, 270), (960, 540)), frames_in: int = 24, runs: int = 3,
              backends=("torch",), device: str = "auto", ffmpeg: bool = True,
              memory_lengths=(), progress=print, peer: bool = False, load: int = 0, factors=(2,)) -> dict:
    """models: {name: DualStream}; every model runs in every backend at every frame-rate factor,
    on the same frames, beside `load` busy processes."""
    with busy_load(load):
        result = _run_bench(models, sizes, frames_in, runs, backends, device, ffmpeg, memory_lengths, progress, peer,
                            factors)
    result["machine"]["load"] = load
    return result


def _run_bench(models, sizes, frames_in, runs, backends, device, ffmpeg, memory_lengths, progress, peer,
               factors=(2,)) -> dict:
    peak = peak_gflops()
    progress(f"peak fp32 matrix product: {peak:.1f} GFLOP/s on {torch.get_num_threads()} thread(s)")
    progress(f"precision auto picks {precision.describe()}")
    result = {"machine": {"peak_gflop_per_s": peak, "torch_threads": torch.get_num_threads(),
                          "precision_auto": precision.describe(),
                          "cpu": _cpu_name(), "torch": torch.__version__}, "sizes": []}
    if memory_lengths:  # first: freed memory of larger runs would stay in this process's RSS
        w, h = sizes[0]
        progress(f"memory by clip length at {w}x{h}: {', '.join(map(str, memory_lengths))} frames ...")
        name, model = next(iter(models.items()))
        result["memory_by_length"] = {"input": f"{w}x{h}", "backend": f"{name} ({backends[0]})",
                                      "lengths": memory_by_length(model, w, h, list(memory_lengths),
                                                                  backends[0], device)}
    for w, h in sizes:
        row = {"input": f"{w}x{h}", "backends": {}}
        frames = None
        for name, model in models.items():
            for backend in backends:
                for factor in factors:
                    x = "" if factor == 2 else f", x{factor}"
                    progress(f"{w}x{h}: stvsr {name}, backend {backend}{x} ...")
                    r = bench_size(model, w, h, frames_in, runs, backend, device, peak, factor)
                    frames = r.pop("frames")
                    row["backends"][f"{name} ({backend}{x})"] = r
        if peer:
            progress(f"{w}x{h}: peer pipeline SPAN x2 (ncnn) -> RIFE 4.25 ...")
            row["peer"] = peer_fps(frames, runs)
            for r in row["backends"].values():
                r["time_per_frame_vs_peer"] = row["peer"]["fps_out"] / r["fps_out"]
        if ffmpeg:
            progress(f"{w}x{h}: ffmpeg minterpolate + lanczos ...")
            ff = ffmpeg_fps(frames, Fraction(25), runs)
            row["ffmpeg"] = ff
            if ff:
                for r in row["backends"].values():
                    if r["factor"] == "2":  # ffmpeg runs at x2
                        r["ratio_to_ffmpeg"] = r["fps_out"] / ff["fps_out"]
        result["sizes"].append(row)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{os.cpu_count()} logical CPUs"


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"machine: {m['cpu']}, torch {m['torch']} on {m['torch_threads']} thread(s), "
             f"measured fp32 peak {m['peak_gflop_per_s']:.1f} GFLOP/s, "
             f"{m.get('load', 0)} busy process(es) beside the measurement",
             f"precision auto: {m.get('precision_auto', '-')}", ""]
    lines.append("| input -> output | runs on | output frames/s | vs ffmpeg | time per frame vs peer | peak memory "
                 "| conv stages at % of peak |")
    lines.append("|---|---|---|---|---|---|---|")
    for row in result["sizes"]:
        for backend, r in row["backends"].items():
            ratio = f"{r['ratio_to_ffmpeg']:.2f}x" if "ratio_to_ffmpeg" in r else "-"
            vs_peer = f"{r['time_per_frame_vs_peer']:.2f}x" if "time_per_frame_vs_peer" in r else "-"
            lines.append(f"| {r['input']} -> {r['output']} | stvsr {backend}: {r['runs_on']} | {r['fps_out']:.2f} | {ratio} | "
                         f"{vs_peer} | {r['peak_rss_mib']:.0f} MiB | {100 * r['conv_stages_fraction_of_peak']:.0f}% |")
        pr = row.get("peer")
        if pr:
            lines.append(f"| {row['input']} | peer: {pr['pipeline']} | {pr['fps_out']:.2f} | - | 1.00x | - | - |")
        ff = row.get("ffmpeg")
        if ff:
            lines.append(f"| {row['input']} -> {2 * int(row['input'].split('x')[0])}x"
                         f"{2 * int(row['input'].split('x')[1])} | ffmpeg minterpolate + lanczos | "
                         f"{ff['fps_out']:.2f} | 1.00x | - | - | - |")
    lines += ["", "| input | model (backend) | stage | GFLOP per output frame | ms per call | GFLOP/s | % of peak |",
              "|---|---|---|---|---|---|---|"]
    for row in result["sizes"]:
        for backend, r in row["backends"].items():
            for name, st in r["stages"].items():
                g = "-" if st["gflop_per_output_frame"] is None else f"{st['gflop_per_output_frame']:.2f}"
                rate = "-" if st["gflop_per_s"] is None else f"{st['gflop_per_s']:.0f}"
                frac = "-" if st["fraction_of_peak"] is None else f"{100 * st['fraction_of_peak']:.0f}%"
                lines.append(f"| {r['input']} | {backend} | {name} | {g} | {st['ms_per_call']:.1f} | {rate} | {frac} |")
    if "memory_by_length" in result:
        mb = result["memory_by_length"]
        lines += ["", f"peak memory by clip length ({mb['input']}, {mb['backend']}): " + ", ".join(
            f"{n} frames: {v['peak_rss_mib']:.0f} MiB" for n, v in mb["lengths"].items())]
    lines.append("(DIS runs in OpenCV: its FLOPs are not counted; GPU figures are not measured here)")
    return "\n".join(lines)
