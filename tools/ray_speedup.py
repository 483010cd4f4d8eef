"""The speedup of `stvsr upsample --ray` from 1 to 2 workers on this machine, measured in one run.

Starts a local Ray cluster (a head node and a second node on this machine, one CPU each: the
set-up of two machines in the README, on one), makes a clip of real footage (the bundled demo
clip's frames, resized), and runs the same command with --ray-workers 1 and 2 in the order
1, 2, 2, 1 (so a load that drifts during the measurement cancels), each into a fresh output and
work folder, timing the whole command as a user sees it (connecting, starting the workers,
loading the model, planning, rendering, stitching). Checks that every run wrote the same frames.

    .venv/bin/python tools/ray_speedup.py            # prints the figures and the ratio
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stvsr_core.video_io import DEMO_CLIP  # noqa: E402


def make_clip(path: Path, frames: int, width: int) -> tuple[int, int]:
    with av.open(str(DEMO_CLIP)) as c:
        src = [f.to_image() for _, f in zip(range(frames), c.decode(video=0))]
    height = round(src[0].height * width / src[0].width / 2) * 2
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"crf": "12"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for img in src:
            for p in s.encode(av.VideoFrame.from_ndarray(np.array(img.resize((width, height))), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return width, height


def frames_of(folder: Path) -> list[bytes]:
    from PIL import Image
    return [np.array(Image.open(p)).tobytes() for p in sorted(folder.iterdir())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64, help="source frames of the clip (default 64: all)")
    ap.add_argument("--width", type=int, default=640, help="clip width in pixels (default 640: the clip's own)")
    ap.add_argument("--chunk-frames", type=int, default=8, help="source frames per chunk (default 8)")
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    from ray.cluster_utils import Cluster
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w, h = make_clip(tmp / "clip.mp4", args.frames, args.width)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            seconds: dict[int, list[float]] = {1: [], 2: []}
            # the command's own "wrote ... in T s": starting the workers, the chunks, the stitch
            render: dict[int, list[float]] = {1: [], 2: []}
            outputs = []
            for i, n in enumerate((1, 2, 2, 1)):
                out = tmp / f"out{i}"
                cmd = [sys.executable, "-m", "stvsr_core.cli", "upsample", str(tmp / "clip.mp4"), "-o", str(out),
                       "--model", args.model, "--precision", "bf16", "--chunk-frames", str(args.chunk_frames),
                       "--work", str(tmp / f"work{i}"), f"--ray={cluster.address}", "--ray-workers", str(n)]
                t0 = time.perf_counter()
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    print(r.stderr[-3000:], file=sys.stderr)
                    return 1
                seconds[n].append(dt)
                wrote = re.search(r"wrote \d+ frames of \d+ clip\(s\) in ([\d.]+) s", r.stderr)
                render[n].append(float(wrote.group(1)))
                outputs.append(frames_of(out))
                workers = next(line for line in r.stderr.splitlines() if line.startswith("stvsr: workers:"))
                stitch = re.search(r"stitched in ([\d.]+) s", r.stderr)
                print(f"run {i + 1}: {n} worker(s): {dt:.1f} s, of which {render[n][-1]:.1f} s from the workers' "
                      f"start to the output, {float(stitch.group(1)) if stitch else 0:.1f} s of it stitching; "
                      f"{workers[len('stvsr: workers: '):]}")
        finally:
            cluster.shutdown()
    same = all(o == outputs[0] for o in outputs)
    n_out = len(outputs[0])
    t1, t2 = sum(seconds[1]) / 2, sum(seconds[2]) / 2
    r1, r2 = sum(render[1]) / 2, sum(render[2]) / 2
    load = os.getloadavg()[0]
    print(f"clip: {args.frames} frames of {w}x{h} (the demo clip's footage) -> {n_out} frames, "
          f"{args.chunk_frames}-frame chunks, model {args.model}, bf16, one CPU thread a worker")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print(f"1 worker: {t1:.1f} s, 2 workers: {t2:.1f} s (the whole command, mean of two runs each, order 1 2 2 1)")
    print(f"speedup 1 -> 2 workers: {t1 / t2:.2f}x for the whole command, {r1 / r2:.2f}x from the workers' start "
          f"to the output ({r1:.1f} s -> {r2:.1f} s); all four outputs identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
