"""Issue 11 items 2-4 (and issue 14 item 1): one composition of Fig. 1 shared by the engine,
training, the bench and the FLOP count, at any factor; random access; the model descriptor."""
import random
from fractions import Fraction as Fr

import pytest
import torch

from helpers import real_frames, random_model, require_backbones
from stvsr_core import DualStream, Engine, list_models, load_model
from stvsr_core.backbones import store
from stvsr_core.bench import stage_seconds
from stvsr_core.descriptor import ModelInfo
from stvsr_core.flops import stage_flops
from stvsr_core.recipes import RECIPES
from stvsr_core.runner import Recorder
from stvsr_core.tiling import pad_to_multiple
from stvsr_core.timeline import Retime, Timeline
from stvsr_core.train import stage2_streams

CONFIGS = {name: RECIPES[name]["model"] for name in ("stvsr-fast", "stvsr-lite", "stvsr-realtime", "stvsr-lite-ifnet")}
CONFIGS["dis-cue"] = {**RECIPES["stvsr-fast"]["model"], "fusion": {"preset": "lite", "inputs": "streams+dis_error"}}
CONFIGS["per-resolution"] = {**RECIPES["stvsr-fast"]["model"],
                             "temporal": {"arch": "per_resolution", "low": {"arch": "dis", "preset": "ultrafast"},
                                          "high": {"arch": "ifnet_lite"}}}
X4 = {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
      "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
      "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}}
CONFIGS["x4"] = X4


@pytest.fixture(scope="module")
def frames():
    return [f[:, :48, :64].contiguous() for f in real_frames(start=40, count=4, size=(128, 72))]


@pytest.mark.parametrize("factor", [2, 3, Fr(5, 2)])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_engine_renders_the_composition_at_every_t(name, factor, frames):
    """Every in-between output frame is DualStream.middle's H_R at its slot's t; DIS estimates its
    flows once per pair whatever the number of t; M_S runs once per source frame."""
    model = random_model(CONFIGS[name])
    eng = Engine(model, "cpu", precision="fp32", factor=factor, scene_threshold=None)
    out = list(eng.run(iter(frames), total=len(frames)))
    tl = Timeline(Retime(factor), 25)
    assert len(out) == tl.count(len(frames))
    s, m = model.scale, model.size_multiple
    L = [pad_to_multiple(f[None], m) for f in frames]
    with torch.inference_mode():
        H = [model.spatial(x) for x in L]
        for j, frame in enumerate(out):
            slot = tl.slot(j, len(frames))
            if slot.between:
                ref = model.middle(L[slot.k], L[slot.k + 1], H[slot.k], H[slot.k + 1], float(slot.t)).H_R
            else:
                ref = H[slot.k]
            ref = ref[0, :, :48 * s, :64 * s].clamp(0, 1)
            assert (frame - ref).abs().max() < 1e-5, (j, slot)
    assert eng.stats["spatial_calls"] == len(frames)
    assert eng.stats["estimates"] == len(frames) - 1  # once per pair, at any factor


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_training_bench_and_flops_run_the_same_steps(name, frames):
    model = random_model(CONFIGS[name])
    L0, L1 = (pad_to_multiple(f[None], model.size_multiple) for f in frames[:2])
    rec = Recorder()
    with torch.inference_mode():
        H0, H1 = model.spatial(L0), model.spatial(L1)
        mid = model.middle(L0, L1, H0, H1, run=rec)
    steps = set(rec.steps)
    assert {"M_T estimate", "M_T"} <= steps and ("F" in steps) != model.info.single_stream
    assert ("R" in steps) == model.info.refines
    eng = Engine(model, "cpu", precision="fp32")
    assert set(stage_seconds(eng, L0, L1, runs=1)) == steps | {"M_S"}
    flops = stage_flops(model, 64, 48)
    assert set(flops) == steps | {"M_S", "per pair (2 output frames)"}
    assert flops["M_S"] > 0 and (flops["M_T"] is None) == (model.M_T.__class__.__name__ == "DISInterp")
    # stage 2 trains F and R on the streams inference makes (the stage-2 mismatch of issue 14)
    with torch.no_grad():
        H_st, H_ts = stage2_streams(model, L0, L1)
    assert (H_st - mid.H_st).abs().max() < 1e-5 and (H_ts - mid.H_ts).abs().max() < 1e-5


@pytest.mark.parametrize("name", [n for n in list_models()])
def test_shipped_models_train_on_the_streams_they_infer(name, frames):
    """Issue 14 item 1, for every shipped model: training's H_st and H_ts are the engine's."""
    try:
        model = load_model(name)
    except Exception as e:  # a model on pretrained backbones that are not installed
        if not all(store.installed(n) for n in ("spanx2_ch48", "rife-4.25")):
            require_backbones(f"{name}: {e}")
        raise
    L0, L1 = (pad_to_multiple(f[None], model.size_multiple) for f in frames[:2])
    eng = Engine(model, "cpu", precision="fp32")
    with torch.no_grad():
        H_st, H_ts = stage2_streams(model, L0, L1)
    H0, H1 = eng.spatial(L0), eng.spatial(L1)
    mid = model.middle(L0, L1, H0, H1, run=eng.runner)
    assert (H_st - mid.H_st).abs().max() < 1e-4 and (H_ts - mid.H_ts).abs().max() < 1e-4


@pytest.mark.parametrize("factor", [2, 3, Fr(5, 2)])
def test_random_access_in_any_order_gives_the_same_frames(factor, frames):
    model = random_model(CONFIGS["stvsr-fast"])
    eng = Engine(model, "cpu", precision="fp32", factor=factor)
    streamed = list(eng.run(iter(frames)))
    tl = eng.timeline(25)
    n = len(frames)
    acc = eng.access(tuple(frames[0].shape[-2:]))
    order = list(range(tl.count(n)))[::-1]
    random.Random(0).shuffle(order)
    got = {j: acc.render(tl.slot(j, n), lambda k: frames[k]) for j in order}
    assert acc.spatial.computed == n  # M_S once per source frame
    assert acc.estimates.computed == n - 1
    in_order = eng.access(tuple(frames[0].shape[-2:]))
    assert all(torch.equal(got[j], in_order.render(tl.slot(j, n), lambda k: frames[k])) for j in range(len(got)))
    # streaming tunes its thread count to the load: oneDNN's sums may round differently
    assert all((got[j] - streamed[j]).abs().max() < 1e-5 for j in range(len(streamed)))


def test_host_cut_flags_win_over_the_measure(frames):
    eng = Engine(random_model(CONFIGS["stvsr-fast"]), "cpu", precision="fp32")
    acc = eng.access()
    src = lambda k: frames[k]
    assert torch.equal(acc.between(0, 0.5, src, cut=True), acc.frame(0, src))
    assert not torch.equal(acc.between(1, 0.5, src, cut=False), acc.frame(1, src))


def test_spatial_only_and_temporal_only(frames):
    model = random_model(CONFIGS["stvsr-fast"])
    spatial = list(Engine(model, "cpu", precision="fp32", factor=1).run(iter(frames)))
    assert len(spatial) == len(frames) and spatial[0].shape[-2:] == (96, 128)
    eng = Engine(model, "cpu", precision="fp32", factor=3, upscale=False, scene_threshold=None)
    temporal = list(eng.run(iter(frames)))
    assert len(temporal) == 10 and temporal[1].shape[-2:] == (48, 64) and eng.stats["spatial_calls"] == 0
    assert torch.allclose(temporal[0], frames[0]) and torch.allclose(temporal[3], frames[1])
    ref = eng.interpolate_frames(frames[0][None], frames[1][None], 1 / 3)[0].clamp(0, 1)
    assert (temporal[1] - ref).abs().max() < 1e-6
    one = list(Engine(model, "cpu", factor=1).run(iter(frames[:1])))  # an image: no pair needed
    assert len(one) == 1


def test_descriptor_declares_what_hosts_and_training_read():
    fast = DualStream(RECIPES["stvsr-fast"]["model"]).info
    assert isinstance(fast, ModelInfo) and fast.scale == 2 and fast.shares_flows and not fast.needs_cue
    assert fast.trainable == ("M_S", "F", "R") and "M_T" not in fast.tileable
    ifnet = DualStream(RECIPES["stvsr-lite-ifnet"]["model"]).info
    assert ifnet.trainable == ("M_S", "M_T", "F", "R") and not ifnet.shares_flows
    assert DualStream(X4).info.scale == 4 and DualStream(RECIPES["stvsr-realtime"]["model"]).info.single_stream


def test_single_step_calls_share_one_estimate_across_times(frames):
    """The node-by-node hosts (Frame Interpolate, Dual-Stream Upsample at multiplier 4) ask for
    several t of a pair at once: one DIS estimate, the same frames as one call per t."""
    model = random_model(CONFIGS["stvsr-fast"])
    eng = Engine(model, "cpu", precision="fp32")
    a, b = frames[0][None], frames[1][None]
    times = [0.25, 0.5, 0.75]
    calls = []
    estimate = model.M_T.estimate
    model.M_T.estimate = lambda *args: calls.append(1) or estimate(*args)
    many = eng.interpolate_frames(a, b, times)
    assert len(calls) == 1
    assert all(torch.equal(m, eng.interpolate_frames(a, b, t)) for m, t in zip(many, times))
    H0, H1 = eng.upscale(a), eng.upscale(b)
    calls.clear()
    pairs = eng.streams(a, b, H0, H1, times)
    assert len(calls) == 1 and len(pairs) == 3
    assert all(torch.equal(p[0], eng.streams(a, b, H0, H1, t)[0]) for p, t in zip(pairs, times))
