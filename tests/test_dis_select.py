"""DISOcclusion and DISSelect: DIS's fixed flows, and a per-pixel choice between warps
(weight-free by an occlusion test, or learned on top of it)."""
import pytest
import torch
import torch.nn.functional as F

from stvsr_core import DualStream
from stvsr_core.dis_select import DISOcclusion, DISSelect
from stvsr_core.engine import Engine
from stvsr_core.recipes import RECIPES
from stvsr_core.temporal import TEMPORAL, DISInterp
from stvsr_core.train import stage_loss, stage_parameters
from stvsr_core.warp import backward_warp, splatted_intermediate_flows

from helpers import real_frames

RECIPE, SELECT = RECIPES["stvsr-fast-v3"], RECIPES["stvsr-fast-v3-select"]


def _frames(size=(70, 46)):
    a, b = real_frames(0, 2, size=size)
    return a[None], b[None]


def _hr(*xs):
    return [F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1) for x in xs]


def test_at_init_it_is_the_average_of_the_linear_and_splatted_dis_blends():
    """Zero last conv and a log prior in t: half DIS's own blend (linear flows), half the same
    blend along the splatted flows; at odd sizes (the CNN pads for itself), low and high res."""
    assert TEMPORAL["dis_select"] is DISSelect
    L0, L1 = _frames()
    H0, H1 = _hr(L0, L1)
    m, dis = DISSelect(occlusion=0), DISInterp(preset="dense", high_res_flow="upsample")
    est = dis.estimate(L0, L1)
    for t in (0.25, 0.5, 2 / 3):
        with torch.no_grad():
            lo, hi = m.pair(L0, L1, H0, H1, t, est)
            d_lo, d_hi = dis.pair(L0, L1, H0, H1, t, est)
            f01, f10 = est[0]
            e0 = (L0 - backward_warp(L1, f01)).abs().mean(1, keepdim=True)
            e1 = (L1 - backward_warp(L0, f10)).abs().mean(1, keepdim=True)
            tt = torch.tensor(t).reshape(1, 1, 1, 1)
            s0, s1, _ = splatted_intermediate_flows(f01, f10, tt, torch.exp(-20 * e0), torch.exp(-20 * e1))
            s_lo = (1 - t) * backward_warp(L0, s0) + t * backward_warp(L1, s1)
            u0, u1 = DISInterp.upsample_flows((s0, s1), H0.shape)
            s_hi = (1 - t) * backward_warp(H0, u0) + t * backward_warp(H1, u1)
        assert lo.shape == L0.shape and hi.shape == H0.shape
        assert (lo - (d_lo + s_lo) / 2).abs().max() < 1e-5
        assert (hi - (d_hi + s_hi) / 2).abs().max() < 1e-5
        C, W, C_hr, W_hr = m.parts(L0, L1, H0, H1, t, est)
        assert torch.allclose(W.sum(1), torch.ones(1)) and torch.allclose(W_hr.sum(1), torch.ones(1))
    with torch.no_grad():
        assert (m(L0, L1, 0.5) - m.pair(L0, L1, None, None, 0.5)[0]).abs().max() < 1e-6


def test_without_the_test_and_splatting_it_is_dis_and_the_learned_one_starts_as_the_weight_free():
    assert TEMPORAL["dis_occlusion"] is DISOcclusion
    L0, L1 = _frames()
    H0, H1 = _hr(L0, L1)
    dis = DISInterp(preset="dense", high_res_flow="upsample")
    est = dis.estimate(L0, L1)
    with torch.no_grad():
        for t in (0.25, 0.5):
            a, b = DISOcclusion(splat=False, occlusion=0).pair(L0, L1, H0, H1, t, est), dis.pair(L0, L1, H0, H1, t, est)
            assert all((x - y).abs().max() < 1e-5 for x, y in zip(a, b))
            a, b = DISOcclusion().pair(L0, L1, H0, H1, t, est), DISSelect().pair(L0, L1, H0, H1, t, est)
            assert all((x - y).abs().max() < 1e-6 for x, y in zip(a, b))
            assert (a[0] - b[0]).abs().max() < 1e-6


@pytest.mark.parametrize("splat", [True, False])
def test_the_occlusion_test_trusts_the_one_frame_that_sees_the_content(splat):
    """Where frame 1's DIS error (carried to t) is over 4x frame 0's, frame 1's content is hidden
    in frame 0: I0's warps are down-weighted. Where both errors are high (DIS failed, no
    occlusion) or both low, the weights stay the prior's (1-t)/2, t/2."""
    m = DISOcclusion(splat=splat)
    n = 4 if splat else 2
    C, cover = torch.zeros(1, n, 3, 16, 16), torch.ones(1, 1, 16, 16)
    t_ = torch.tensor(0.5).reshape(1, 1, 1, 1)
    errs = torch.zeros(1, n, 16, 16)  # I0 linear, I1 linear (, I0 splatted, I1 splatted)
    errs[:, :, :, :4] = 0.3                  # both high: a flow failure
    errs[:, 1::2, :, 4:8] = 0.2              # only frame 1's: its content is hidden in frame 0
    errs[:, 0::2, :, 8:12] = 0.2             # only frame 0's
    with torch.no_grad():
        W = m.weights(C, cover, errs, t_)
    even = torch.full((n,), 1 / n)
    assert torch.allclose(W[0, :, 8, 1], even, atol=1e-4) and torch.allclose(W[0, :, 8, 14], even, atol=1e-4)
    assert W[0, 1::2, 8, 6].sum() > 0.99 and W[0, 0::2, 8, 6].sum() < 0.01
    assert W[0, 0::2, 8, 10].sum() > 0.99 and W[0, 1::2, 8, 10].sum() < 0.01


def test_the_choice_learns_from_the_start():
    """At the zero init the task loss already moves the last layer, and toward the candidate that
    is right: here frame 1 is the true frame at t, so the weights of I1's warps must rise."""
    L0, L1 = _frames()
    H0, H1 = _hr(L0, L1)
    m = DISSelect(choice_loss=1.0)
    loss = m.task_loss(L0, L1, H0, H1, L1, H1, 0.5)
    loss.backward()
    g = m.out.bias.grad  # logits: I0 linear, I1 linear, I0 splatted, I1 splatted
    assert m.out.weight.grad.abs().sum() > 0
    assert g[1] < 0 and g[3] < 0 and g[0] > 0 and g[2] > 0


def test_differentiable_in_its_weights_and_the_frames_not_in_dis():
    L0, L1 = _frames()
    H0, H1 = (x.requires_grad_(True) for x in _hr(L0, L1))
    m = DISSelect()
    for p in m.parameters():  # away from the zero init, so every layer's gradient is nonzero
        torch.nn.init.normal_(p, std=0.05)
    lo, hi = m.pair(L0, L1, H0, H1, 0.5)
    (lo.abs().mean() + hi.abs().mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert H0.grad.abs().sum() > 0  # M_S learns through stream S->T in stage 3


def test_estimate_once_per_pair_and_the_cue_reuses_it():
    """DIS runs once per pair (low res only) for every t and for F's warp-error cue."""
    model = DualStream(RECIPE["model"]).eval()
    assert model.info.shares_flows and model.info.needs_cue
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


def test_recipes_v3_m_t_is_weight_free_and_the_select_one_trains_it_alone():
    v3 = DualStream(RECIPE["model"])
    assert "M_T" not in v3.info.trainable and not list(v3.M_T.parameters()) and max(RECIPE["gaps"]) >= 3
    model = DualStream(SELECT["model"])
    spec = SELECT["stages"][1]
    assert spec.parts == ("M_T",) and max(SELECT["gaps"]) >= 3
    assert {id(p) for p in stage_parameters(model, 1, spec.parts)} == {id(p) for p in model.M_T.parameters()}
    hr = torch.rand(2, 3, 3, 48, 48)
    loss, terms = stage_loss(model, hr, 1, spec.parts)
    assert set(terms) == {"M_T"} and loss.requires_grad


@pytest.mark.parametrize("cls", [DISOcclusion, DISSelect])
def test_refuses_high_res_estimates(cls):
    with pytest.raises(ValueError, match="upsample"):
        cls(high_res_flow="estimate")
