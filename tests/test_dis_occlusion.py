"""DISOcclusion: DIS's fixed flows, and a per-pixel choice of flow (linear or splatted) and of
frame (an occlusion test), weight-free."""
import pytest
import torch
import torch.nn.functional as F

from stvsr_core import DualStream
from stvsr_core.dis_occlusion import DISOcclusion
from stvsr_core.engine import Engine
from stvsr_core.recipes import RECIPES
from stvsr_core.temporal import TEMPORAL, DISInterp
from stvsr_core.warp import backward_warp

from helpers import real_frames

RECIPE = RECIPES["stvsr-fast-v3"]


def _frames(size=(70, 46)):
    a, b = real_frames(0, 2, size=size)
    return a[None], b[None]


def _hr(*xs):
    return [F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1) for x in xs]


def test_the_occlusion_test_trusts_the_one_frame_that_sees_the_content():
    """Where frame 1's DIS error (carried to t) is over 4x frame 0's, frame 1's content is hidden
    in frame 0: I0's candidates lose their weight. Where both errors are high (DIS failed, no
    occlusion) or both low, the weights stay the prior's (1-t)/2, t/2, t/2, (1-t)/2."""
    m = DISOcclusion()
    t_ = torch.tensor(0.5).reshape(1, 1, 1, 1)
    errs = torch.zeros(1, 4, 16, 16)  # I0 linear, I1 linear, I0 splatted, I1 splatted
    errs[..., :4] = 0.3               # both high: a flow failure
    errs[:, 1::2, :, 4:8] = 0.2       # only frame 1's: its content is hidden in frame 0
    errs[:, 0::2, :, 8:12] = 0.2      # only frame 0's
    W = m.weights(errs, t_)
    assert torch.allclose(W.sum(1), torch.ones(1))
    even = torch.full((4,), 0.25)
    assert torch.allclose(W[0, :, 8, 1], even, atol=1e-4) and torch.allclose(W[0, :, 8, 14], even, atol=1e-4)
    assert W[0, 1::2, 8, 6].sum() > 0.99 and W[0, 0::2, 8, 10].sum() > 0.99


def test_without_the_test_on_a_uniform_motion_it_is_dis():
    """A uniform translation: the splatted and the linear flows agree, so with the test off
    (occlusion=0) the blend is DIS's own at both resolutions, at odd sizes too."""
    L0 = real_frames(0, 1, size=(71, 47))[0][None]
    L1 = torch.roll(L0, 3, -1)
    H0, H1 = _hr(L0, L1)
    dis = DISInterp(preset="dense", high_res_flow="upsample")
    f = torch.zeros(1, 2, *L0.shape[-2:])
    f[:, 0] = 3.0
    est = ((f, -f), None)
    with torch.no_grad():
        for t in (0.25, 0.5):
            (a, ah), (b, bh) = DISOcclusion(occlusion=0).pair(L0, L1, H0, H1, t, est), dis.pair(L0, L1, H0, H1, t, est)
            assert a.shape == b.shape == L0.shape and ah.shape == bh.shape == H0.shape
            inner = (..., slice(4, -4), slice(8, -8))  # splatting leaves holes at the borders
            assert (a - b)[inner].abs().max() < 1e-4 and (ah - bh)[inner].abs().max() < 1e-4


def test_an_occluded_region_is_taken_from_the_frame_that_shows_it():
    """A textured square moving 8 px right over a still textured background: at t = 1/2 the
    background it uncovers exists in frame 1 only, the background it covers in frame 0 only.
    DIS's even blend ghosts both strips; the occlusion test takes each from its one frame."""
    bg, fg = (real_frames(i, i + 1, size=(96, 64))[0][None] for i in (0, 1))
    sq = (slice(None), slice(None), slice(20, 44), slice(30, 54))

    def frame(x):
        out = bg.clone()
        out[..., 20:44, 30 + x:54 + x] = fg[sq]
        return out
    I0, It, I1 = frame(0), frame(4), frame(8)
    f01, f10 = torch.zeros(1, 2, 64, 96), torch.zeros(1, 2, 64, 96)
    f01[:, 0, 20:44, 30:54], f10[:, 0, 20:44, 38:62] = 8, -8
    est = ((f01, f10), None)
    with torch.no_grad():
        occ = DISOcclusion().pair(I0, I1, None, None, 0.5, est)[0]
        dis = DISInterp().pair(I0, I1, None, None, 0.5, est)[0]
    uncovered, covered = (..., slice(22, 42), slice(30, 34)), (..., slice(22, 42), slice(58, 60))
    err = lambda x, s: (x - It)[s].abs().mean()
    assert err(occ, uncovered) < 0.6 * err(dis, uncovered)  # measured 0.07 against 0.14
    assert err(occ, covered) < 0.2 * err(dis, covered)      # measured 0.01 against 0.19


def test_differentiable_in_the_frames_not_in_its_choice():
    L0, L1 = _frames()
    H0, H1 = (x.requires_grad_(True) for x in _hr(L0, L1))
    m = DISOcclusion()
    assert not list(m.parameters()) and not m.traits.trainable
    lo, hi = m.pair(L0, L1, H0, H1, 0.5)
    hi.abs().mean().backward()
    assert H0.grad.abs().sum() > 0 and H1.grad.abs().sum() > 0  # M_S learns through stream S->T in stage 3


def test_estimate_once_per_pair_and_the_cue_reuses_it():
    """DIS runs once per pair (low res only) for every t and for F's warp-error cue."""
    assert TEMPORAL["dis_occlusion"] is DISOcclusion
    model = DualStream(RECIPE["model"]).eval()
    assert model.info.shares_flows and model.info.needs_cue and "M_T" not in model.info.trainable
    eng = Engine(model, "cpu", precision="fp32")
    a, b = _frames()
    calls = []
    flows = model.M_T.flows
    model.M_T.flows = lambda *args: calls.append(1) or flows(*args)
    times = [0.25, 0.5, 0.75]
    H0, H1 = eng.upscale(a), eng.upscale(b)
    pairs = eng.streams(a, b, H0, H1, times, cue=True)
    assert len(calls) == 1 and len(pairs) == 3
    calls.clear()
    eng.interpolate_frames(a, b, times)
    assert len(calls) == 1


def test_refuses_high_res_estimates():
    with pytest.raises(ValueError, match="upsample"):
        DISOcclusion(high_res_flow="estimate")


def test_a_per_resolution_m_t_gives_the_cue_its_low_res_dis():
    """stvsr-quality's M_T is one network per resolution; its low-res DIS's flows feed F's cue
    too (no second DIS per pair), and the cue is the same with and without the shared estimate."""
    config = {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 8, "blocks": 1},
              "temporal": {"arch": "per_resolution", "low": {"arch": "dis_occlusion", "preset": "medium"},
                           "high": {"arch": "dis", "preset": "medium"}},
              "fusion": {"preset": "lite", "masks": 2, "inputs": "streams+dis_error"}, "refine": {"preset": "lite"}}
    model = DualStream(config).eval()
    assert model._cue_dis is None
    a, b = _frames()
    calls = []
    flows = model.M_T.low.flows
    model.M_T.low.flows = lambda *args: calls.append(1) or flows(*args)
    with torch.no_grad():
        H0, H1 = model.spatial(a), model.spatial(b)
        est = model.estimate(a, b, H0, H1)
        shared = model.cue(a, b, 0.5, estimate=est)
        assert len(calls) == 1
        model.middle(a, b, H0, H1, 0.5, est)
        assert len(calls) == 1
        alone = model.cue(a, b, 0.5)
    assert len(calls) == 2 and shared.shape[-2:] == H0.shape[-2:]
    assert torch.allclose(shared, alone)
