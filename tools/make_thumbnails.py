"""Renders example_workflows/<name>.jpg, the template browser's thumbnails, from a real output of
each template: queues workflows/api/<name>_api.json in a running ComfyUI that has this pack
loaded and crops the middle frame (an in-between frame) that each of its Save Image nodes writes.

Run: python tools/make_thumbnails.py http://127.0.0.1:8188 [NAME ...]  (default: every template)
"""
from __future__ import annotations

import io
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 384  # the browser's cards are square; a crop at the output's own scale shows its detail


def thumbnail(frames: list[Image.Image]) -> Image.Image:
    """A square of SIZE px: the centre of each frame as one band, top to bottom."""
    out = Image.new("RGB", (SIZE, SIZE))
    for i, frame in enumerate(frames):
        top, bottom = SIZE * i // len(frames), SIZE * (i + 1) // len(frames)
        w, h = frame.size
        cw, ch = (h * SIZE // (bottom - top), h) if w * (bottom - top) > h * SIZE else (w, w * (bottom - top) // SIZE)
        box = ((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2)
        out.paste(frame.convert("RGB").crop(box).resize((SIZE, bottom - top), Image.LANCZOS), (0, top))
    return out


def middle_frames(url: str, prompt: dict) -> list[Image.Image]:
    """Runs the prompt; the middle frame saved by each of its SaveImage nodes."""
    body = json.dumps({"prompt": prompt, "client_id": "stvsr-thumbnails"}).encode()
    req = urllib.request.Request(url + "/prompt", body, {"Content-Type": "application/json"})
    pid = json.loads(urllib.request.urlopen(req).read())["prompt_id"]
    while True:
        entry = json.loads(urllib.request.urlopen(f"{url}/history/{pid}").read()).get(pid, {})
        if entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(1)
    if entry["status"]["status_str"] != "success":
        sys.exit(f"the workflow failed: {json.dumps(entry['status'])[-2000:]}")
    frames = []
    for save in sorted((k for k, n in prompt.items() if n["class_type"] == "SaveImage"), key=int):
        images = entry["outputs"][save]["images"]
        query = urllib.parse.urlencode(images[len(images) // 2])
        frames.append(Image.open(io.BytesIO(urllib.request.urlopen(f"{url}/view?{query}").read())))
    return frames


if __name__ == "__main__":
    url = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8188"
    names = set(sys.argv[2:])
    for ui in sorted((ROOT / "example_workflows").glob("*.json")):
        if names and ui.stem not in names:
            continue
        prompt = json.loads((ROOT / "workflows" / "api" / f"{ui.stem}_api.json").read_text())
        thumbnail(middle_frames(url, prompt)).save(ui.with_suffix(".jpg"), quality=85)
        print("wrote", ui.with_suffix(".jpg").relative_to(ROOT))
