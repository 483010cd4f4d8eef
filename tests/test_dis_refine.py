"""DISRefine: DIS's fixed flows plus a learned correction (flow residuals, visibility, colour)."""
import torch

from stvsr_core import DualStream
from stvsr_core.engine import Engine
from stvsr_core.recipes import RECIPES
from stvsr_core.temporal import TEMPORAL, DISInterp, DISRefine
from stvsr_core.train import stage_loss, stage_parameters

from helpers import real_frames

RECIPE = RECIPES["stvsr-fast-dis-refine"]


def _frames(size=(70, 46)):
    a, b = real_frames(0, 2, size=size)
    return a[None], b[None]


def test_at_init_it_is_dis_at_both_resolutions_and_any_size():
    """Zero last conv and the visibility bias at log((1-t)/t): DISInterp's blend exactly, on the
    same flows (upsampled for the high-res stream), at odd sizes the CNN pads for itself."""
    assert TEMPORAL["dis_refine"] is DISRefine
    L0, L1 = _frames()
    H0, H1 = (torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic").clamp(0, 1) for x in (L0, L1))
    for mode in ("upsample", "estimate"):
        ref, dis = DISRefine(high_res_flow=mode), DISInterp(high_res_flow=mode)
        for t in (0.25, 0.5, 2 / 3):
            with torch.no_grad():
                (a_lo, a_hi), (b_lo, b_hi) = ref.pair(L0, L1, H0, H1, t), dis.pair(L0, L1, H0, H1, t)
            assert a_lo.shape == b_lo.shape and a_hi.shape == b_hi.shape
            assert (a_lo - b_lo).abs().max() < 1e-5 and (a_hi - b_hi).abs().max() < 1e-5
        with torch.no_grad():
            assert (ref(L0, L1, 0.5) - dis(L0, L1, 0.5)).abs().max() < 1e-5


def test_differentiable_in_its_learned_parts_not_in_dis():
    L0, L1 = _frames()
    m = DISRefine()
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
