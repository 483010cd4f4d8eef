"""DISRefine: DIS's fixed flows plus a learned correction (flow residuals, visibility, colour)."""
import pytest
import torch

from stvsr_core import DualStream
from stvsr_core.engine import Engine
from stvsr_core.recipes import RECIPES
from stvsr_core.temporal import TEMPORAL, DISInterp, DISRefine
from stvsr_core.train import stage_loss, stage_parameters
from stvsr_core.warp import intermediate_flows, splatted_intermediate_flows

from helpers import real_frames

RECIPE = RECIPES["stvsr-fast-dis-refine"]


def _frames(size=(70, 46)):
    a, b = real_frames(0, 2, size=size)
    return a[None], b[None]


@pytest.mark.parametrize("splat", [False, True])
def test_at_init_it_is_dis_at_both_resolutions_and_any_size(splat):
    """Zero last conv and the visibility bias at log((1-t)/t): DISInterp's blend exactly, on the
    same flows (upsampled for the high-res stream), at odd sizes the CNN pads for itself."""
    assert TEMPORAL["dis_refine"] is DISRefine
    L0, L1 = _frames()
    H0, H1 = (torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic").clamp(0, 1) for x in (L0, L1))
    for mode in ("upsample", "estimate"):
        ref, dis = DISRefine(high_res_flow=mode, splat=splat), DISInterp(high_res_flow=mode)
        for t in (0.25, 0.5, 2 / 3):
            with torch.no_grad():
                (a_lo, a_hi), (b_lo, b_hi) = ref.pair(L0, L1, H0, H1, t), dis.pair(L0, L1, H0, H1, t)
            assert a_lo.shape == b_lo.shape and a_hi.shape == b_hi.shape
            assert (a_lo - b_lo).abs().max() < 1e-5 and (a_hi - b_hi).abs().max() < 1e-5
        with torch.no_grad():
            assert (ref(L0, L1, 0.5) - dis(L0, L1, 0.5)).abs().max() < 1e-5


@pytest.mark.parametrize("splat", [False, True])
def test_differentiable_in_its_learned_parts_not_in_dis(splat):
    L0, L1 = _frames()
    m = DISRefine(splat=splat)
    for p in m.parameters():  # away from the zero init, so every layer's gradient is nonzero
        torch.nn.init.normal_(p, std=0.05)
    m(L0, L1, torch.tensor([0.5])).abs().mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert not list(m.dis.parameters())  # DIS itself has nothing to learn: its flows stay fixed


def test_estimate_once_per_pair_for_several_times():
    """DIS runs once per pair (two flow fields at low res); every t reuses them."""
    model = DualStream(RECIPE["model"]).eval()
    assert model.info.shares_flows and "M_T" in model.info.trainable
    eng = Engine(model, "cpu", precision="fp32")
    a, b = _frames()
    calls = []
    flows = model.M_T.dis.flows
    model.M_T.dis.flows = lambda *args: calls.append(1) or flows(*args)
    times = [0.25, 0.5, 0.75]
    H0, H1 = eng.upscale(a), eng.upscale(b)
    pairs = eng.streams(a, b, H0, H1, times)
    assert len(calls) == 1 and len(pairs) == 3
    calls.clear()
    eng.interpolate_frames(a, b, times)
    assert len(calls) == 1


def test_recipe_stage1_trains_m_t_alone():
    model = DualStream(RECIPE["model"])
    spec = RECIPE["stages"][1]
    assert spec.parts == ("M_T",) and RECIPE["gaps"] == (2, 3)
    ids = {id(p) for p in stage_parameters(model, 1, spec.parts)}
    assert ids == {id(p) for p in model.M_T.parameters()}
    hr = torch.rand(2, 3, 3, 32, 32)
    loss, terms = stage_loss(model, hr, 1, spec.parts)
    assert set(terms) == {"M_T"}
    assert {id(p) for p in stage_parameters(model, 1)} >= {id(p) for p in model.M_S.parameters()}


def test_splatted_flows_follow_a_moving_object_where_the_approximation_fails():
    """A 15 px wide square moving 10 px right on a still background, at t = 1/2: it lies at
    x 10..24 with flow -5 back to frame 0. Super SloMo's approximation reads the flows at the
    wrong place (-2.5 at the square's leading and trailing 5 px); softmax splatting, with the
    background each frame has occluded down-weighted, gets them. A uniform translation comes out
    exact everywhere."""
    t = torch.tensor(0.5).reshape(1, 1, 1, 1)
    f = torch.zeros(1, 2, 20, 30)
    f[:, 0] = 6.0
    ft0, ft1, cover = splatted_intermediate_flows(f, -f, t)
    assert torch.allclose(ft0[:, :, 2:-2, 8:-8], torch.tensor([-3.0, 0]).view(1, 2, 1, 1))
    assert torch.allclose(ft1[:, :, 2:-2, 8:-8], torch.tensor([3.0, 0]).view(1, 2, 1, 1))
    f01, f10 = torch.zeros(1, 2, 40, 40), torch.zeros(1, 2, 40, 40)
    f01[:, 0, 10:20, 5:20], f10[:, 0, 10:20, 15:30] = 10, -10
    z0, z1 = torch.ones(1, 1, 40, 40), torch.ones(1, 1, 40, 40)
    z0[..., 10:20, 20:30], z1[..., 10:20, 5:15] = 1e-4, 1e-4  # the background each frame has that the other hides
    s0, _, cover = splatted_intermediate_flows(f01, f10, t, z0, z1)
    a0, _ = intermediate_flows(f01, f10, t)
    for xs in (slice(11, 14), slice(21, 24)):
        obj = (slice(None), 0, slice(11, 19), xs)
        assert (s0[obj] + 5).abs().max() < 0.05 and (a0[obj] + 5).abs().min() > 2
    assert cover.min() >= 0 and cover.max() <= 1
