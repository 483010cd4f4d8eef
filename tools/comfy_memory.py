"""Peak memory of a real ComfyUI running STVSR Upsample on a clip of N frames at 640x360.

For each N it starts a fresh ComfyUI (--cpu, an empty --base-directory with only the packs
linked in), queues one graph, waits until the queue is empty (meta batches requeue it) and reads
the server's peak resident memory (VmHWM, Linux), before and after the run.

  core   Load Video -> Get Video Components -> STVSR Upsample -> Create Video -> Save Video
  vhs    VHS Load Video -> STVSR Upsample -> VHS Video Combine (frame rate typed in: 20)
  --meta-batch K   with VideoHelperSuite's Meta Batch Manager (K frames per batch) on all three

Run: python tools/comfy_memory.py ~/ComfyUI --graph vhs --meta-batch 10 --frames 15 30 60
(VideoHelperSuite from ComfyUI/custom_nodes/ComfyUI-VideoHelperSuite; --pack measures another checkout.)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE, FPS = (640, 360), 20


def clip(path: Path, n: int) -> None:
    """n frames of the bundled clip (looped), resized to SIZE, at FPS."""
    with av.open(str(ROOT / "stvsr_core" / "assets" / "bikes_short.mp4")) as c:
        frames = [np.asarray(f.to_image().resize(SIZE)) for f in c.decode(video=0)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = *SIZE, "yuv420p"
        for i in range(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")))
        c.mux(s.encode())


def graph(kind: str, file: str, meta_batch: int) -> dict:
    model = {"class_type": "LoadSTVSRModel", "inputs": {"model_name": "stvsr-fast", "device": "cpu",
                                                        "precision": "auto"}}
    up = {"scene_threshold": 0.15, "tile": 0, "exact_double": False, "stvsr_model": ["4", 0]}
    batch = {"meta_batch": ["10", 0]} if meta_batch else {}
    if kind == "core":
        return {"1": {"class_type": "LoadVideo", "inputs": {"file": file}},
                "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}}, "4": model,
                "5": {"class_type": "STVSRUpsample", "inputs": dict(up, images=["2", 0], frame_rate=["2", 2])},
                "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["5", 1]}},
                "7": {"class_type": "SaveVideo", "inputs": {"video": ["6", 0], "filename_prefix": "video/mem",
                                                            "format": "auto", "codec": "auto"}}}
    g = {"1": {"class_type": "VHS_LoadVideo", "inputs": dict(
            video=file, force_rate=0, custom_width=0, custom_height=0, frame_load_cap=0, skip_first_frames=0,
            select_every_nth=1, **batch)}, "4": model,
         "5": {"class_type": "STVSRUpsample", "inputs": dict(up, images=["1", 0], frame_rate=float(FPS), **batch)},
         "7": {"class_type": "VHS_VideoCombine", "inputs": dict(
             images=["5", 0], frame_rate=["5", 1], loop_count=0, filename_prefix="video/mem",
             format="video/h264-mp4", pingpong=False, save_output=True, **batch)}}
    if meta_batch:
        g["10"] = {"class_type": "VHS_BatchManager", "inputs": {"frames_per_batch": meta_batch}}
    return g


def peak_mib(pid: int) -> float:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def measure(comfy: Path, pack: Path, kind: str, n: int, meta_batch: int) -> tuple[float, float, float]:
    """(peak MiB before the run, peak MiB after it, seconds) for one fresh server."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / "stvsr").symlink_to(pack)
        vhs = comfy / "custom_nodes" / "ComfyUI-VideoHelperSuite"
        if vhs.is_dir():
            (base / "custom_nodes" / vhs.name).symlink_to(vhs)
        (base / "input").mkdir()
        clip(base / "input" / "clip.mp4", n)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        with open(base / "comfyui.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                     "--base-directory", str(base)], cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
            try:
                for _ in range(180):
                    try:
                        urllib.request.urlopen(url + "/system_stats", timeout=5)
                        break
                    except OSError:
                        time.sleep(1)
                before, t0 = peak_mib(proc.pid), time.time()
                body = json.dumps({"prompt": graph(kind, "clip.mp4", meta_batch)}).encode()
                urllib.request.urlopen(urllib.request.Request(url + "/prompt", body,
                                                              {"Content-Type": "application/json"}))
                while True:
                    time.sleep(1)
                    q = json.loads(urllib.request.urlopen(url + "/queue").read())
                    if not q["queue_running"] and not q["queue_pending"]:
                        break
                hist = json.loads(urllib.request.urlopen(url + "/history").read())
                bad = [h["status"] for h in hist.values() if h["status"]["status_str"] != "success"]
                if bad or not hist:
                    sys.exit(f"the run failed: {json.dumps(bad)[-2000:]}")
                return before, peak_mib(proc.pid), time.time() - t0
            finally:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("comfyui", type=Path, help="a ComfyUI checkout")
    p.add_argument("--graph", choices=["core", "vhs"], default="vhs")
    p.add_argument("--meta-batch", type=int, default=0, help="frames per meta batch (vhs only); 0: none")
    p.add_argument("--frames", type=int, nargs="+", default=[15, 30, 60])
    p.add_argument("--pack", type=Path, default=ROOT, help="the stvsr checkout to load (default: this one)")
    a = p.parse_args()
    if a.meta_batch and a.graph != "vhs":
        p.error("--meta-batch needs --graph vhs")
    print(f"{a.graph}{f', meta batches of {a.meta_batch}' if a.meta_batch else ''}, {SIZE[0]}x{SIZE[1]}, "
          f"pack {a.pack}")
    print("frames | peak MiB after start | peak MiB after the run | run s")
    for n in a.frames:
        before, after, secs = measure(a.comfyui.resolve(), a.pack.resolve(), a.graph, n, a.meta_batch)
        print(f"{n:6d} | {before:20.0f} | {after:22.0f} | {secs:5.0f}", flush=True)
