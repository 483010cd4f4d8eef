"""Shared test helpers: real frames from the bundled clip, small models, video writing."""
from pathlib import Path

import av
import numpy as np
import torch

from stvsr_core import DualStream

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stvsr_core" / "assets" / "bikes_short.mp4"
SHARED = ROOT.parent / "shared"

CONFIGS = {
    "lite-dis": None,
    "espcn-ifnet": {"scale": 2, "spatial": {"arch": "espcn"}, "temporal": {"arch": "ifnet_lite"},
                    "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}},
}


def real_frames(start=0, count=None, size=None):
    """Frames of the bundled demo clip (real footage) as [3, H, W] tensors, optionally resized."""
    out = []
    with av.open(str(DEMO)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i < start:
                continue
            if count is not None and len(out) >= count:
                break
            img = f.to_image()
            if size:
                img = img.resize(size)
            out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    return out


def random_model(config=None, seed=0):
    """An untrained model whose F and R are not the identity (weights perturbed)."""
    torch.manual_seed(seed)
    m = DualStream(config)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m.eval()


def write_video(path, frames, fps=25, audio=False, audio_seconds=None, options=None, title=None):
    """Encode uint8 RGB frames (and optionally a 440 Hz tone, as long as the video unless
    `audio_seconds` says otherwise) with PyAV; `options` for libx264 (e.g. a GOP), `title` tag."""
    with av.open(str(path), "w") as c:
        if title:
            c.metadata["title"] = title
        s = c.add_stream("libx264", rate=fps, options=options or {})
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = None
        if audio:
            a = c.add_stream("aac", rate=48000)
            a.layout = "stereo"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            n = int(48000 * (audio_seconds or len(frames) / fps))
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 48000)).astype(np.float32)
            samples = np.stack([tone, tone])
            for i in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(samples[:, i:i + 1024].copy(), format="fltp", layout="stereo")
                af.sample_rate = 48000
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


def require_backbones(what: str):
    """Skip (or, in CI with STVSR_REQUIRE_BACKBONES=1, fail) when the pretrained backbones are missing."""
    import os

    import pytest
    msg = f"{what}: run `stvsr fetch-backbones` (tools/setup.sh does)"
    if os.environ.get("STVSR_REQUIRE_BACKBONES") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


class RandomTriplets:
    """A training sampler of random triplets; raises after `fail_at` batches (a killed run)."""

    def __init__(self, fail_at=None):
        self.n, self.fail_at, self.crop = 0, fail_at, 32
        self.rng = np.random.default_rng(0)

    def batch(self, b):
        self.n += 1
        if self.fail_at is not None and self.n > self.fail_at:
            raise KeyboardInterrupt("killed")
        return torch.from_numpy(self.rng.random((b, 3, 3, self.crop, self.crop), dtype=np.float32))
