"""Builds docs/demo.png for the README: an in-between frame of the bundled clip, made by stvsr from
two half-size frames, next to bicubic + frame blending and the real frame.

Run: python tools/make_readme_figure.py
"""
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from stvsr_core import load_model
from stvsr_core.degrade import downsample
from stvsr_core.engine import predict_pair

ROOT = Path(__file__).resolve().parents[1]


def main(start=19, box=(360, 0, 640, 272)):
    with av.open(str(ROOT / "stvsr_core/assets/bikes_short.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(start + 3), c.decode(video=0))][start:]
    H = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in frames]
    L0, L1 = downsample(H[0]), downsample(H[2])
    out = predict_pair(load_model(), L0, L1)
    blend = torch.nn.functional.interpolate((L0 + L1) / 2, scale_factor=2, mode="bicubic")
    tiles = []
    for name, img in [("bicubic + blend", blend), ("stvsr (H_R)", out.H_R), ("real frame", H[1])]:
        arr = (img[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = Image.fromarray(arr).crop(box)
        ImageDraw.Draw(tile).text((6, 4), name, fill=(255, 255, 0))
        tiles.append(tile)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (3 * w + 8, h), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * (w + 4), 0))
    sheet.save(ROOT / "docs" / "demo.png")


if __name__ == "__main__":
    main()
