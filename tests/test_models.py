"""The sub-networks and their composition, across a grid of hyperparameters."""
import pytest
import torch

from stvsr_core import DualStream
from stvsr_core.fusion import FusionUNet
from stvsr_core.refine import Refine
from stvsr_core.spatial import SPATIAL
from stvsr_core.temporal import DISInterp, IFNetLite

from helpers import random_model, real_frames


@pytest.mark.parametrize("arch", sorted(SPATIAL))
@pytest.mark.parametrize("scale", [2, 4])
def test_spatial_any_scale(arch, scale):
    m = SPATIAL[arch](scale=scale)
    x = torch.rand(2, 3, 16, 24)
    assert m(x).shape == (2, 3, 16 * scale, 24 * scale)


@pytest.mark.parametrize("spatial", ["espcn", "unshuffle_sr", "bicubic", "span"])
@pytest.mark.parametrize("temporal", ["dis", "ifnet_lite", "rife"])
def test_any_backbone_pair_gives_every_intermediate(spatial, temporal):
    m = DualStream({"scale": 2, "spatial": {"arch": spatial}, "temporal": {"arch": temporal}})
    h = w = max(32, m.size_multiple * 2)
    out = m(torch.rand(1, 3, h, w), torch.rand(1, 3, h, w))
    for name in ("H_prev", "H_next", "H_st", "H_ts", "H_F", "H_R"):
        assert getattr(out, name).shape == (1, 3, 2 * h, 2 * w), name
    assert out.L_mid.shape == (1, 3, h, w)
    assert out.M_st.shape == out.M_ts.shape == (1, 1, 2 * h, 2 * w)


def test_paper_presets_match_supplement_tables():
    f = FusionUNet(preset="paper")
    convs = [m for m in f.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 23  # conv1_1 .. conv12 of Table 3
    assert [c.out_channels for c in convs[:12]] == [32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    assert convs[0].kernel_size == (7, 7) and convs[2].kernel_size == (5, 5)
    assert convs[0].in_channels == 6 and convs[-1].out_channels == 2
    one = FusionUNet(preset="paper", masks=1)
    extra = sum(p.numel() for p in f.parameters()) - sum(p.numel() for p in one.parameters())
    assert extra == 32 * 9 + 1  # the paper's "0.001% more parameters": one output channel
    r = Refine(preset="paper")
    rc = [m for m in r.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(rc) == 8 and rc[0].kernel_size == (7, 7) and rc[1].out_channels == 128


def test_fusion_masks_and_one_mask_variant():
    h_st, h_ts = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    f = FusionUNet(preset="lite", masks=1)
    with torch.no_grad():
        f.out.weight.normal_()
    m_st, m_ts = f(h_st, h_ts)
    assert torch.allclose(m_st + m_ts, torch.ones_like(m_st))
    f2 = random_model().F
    a, b = f2(h_st, h_ts)
    assert 0 <= a.min() and a.max() <= 1 and 0 <= b.min() and b.max() <= 1
    assert not torch.allclose(a + b, torch.ones_like(a))  # two free masks


def test_untrained_heads_start_as_even_blend_and_identity():
    m = DualStream()
    out = m(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert torch.allclose(out.H_F, (out.H_st + out.H_ts) / 2, atol=1e-6)
    assert torch.allclose(out.H_R, out.H_F)


def test_dis_interpolation_on_real_frames_beats_blend():
    """The weight-free M_T lands between real frames better than averaging them."""
    f = real_frames(start=30, count=3, size=(320, 136))
    a, mid, b = (x[None] for x in f)
    dis = DISInterp()(a, b)
    err_dis = (dis - mid).abs().mean()
    err_blend = ((a + b) / 2 - mid).abs().mean()
    assert err_dis < err_blend * 0.9


def test_ifnet_takes_time_input():
    m = IFNetLite()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
    assert not torch.allclose(m(a, b, 0.25), m(a, b, 0.75))


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown spatial architecture 'nope'"):
        DualStream({"scale": 2, "spatial": {"arch": "nope"}, "temporal": {"arch": "dis"}})


def test_single_stream_config_skips_fusion_and_stream_t_to_s(tmp_path):
    """fusion preset none (the realtime preset): H_F is H_st, M_S never runs on L_mid."""
    from stvsr_core import Engine, load_weights, save_weights
    from stvsr_core.fusion import StreamST
    m = DualStream({"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
                    "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
                    "fusion": {"preset": "none"}, "refine": {"preset": "fast"}}).eval()
    assert isinstance(m.F, StreamST) and m.single_stream and not list(m.F.parameters())
    f = real_frames(start=40, count=3, size=(64, 48))
    L0, L1 = f[0][None], f[2][None]
    calls = []
    m.M_S.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        out = m(L0, L1)
    assert len(calls) == 2  # the two input frames only
    assert out.H_ts is out.H_st and torch.equal(out.H_F, out.H_st)
    assert out.M_st.min() == 1 and out.M_ts.max() == 0
    save_weights(m, tmp_path / "rt.safetensors")
    again = load_weights(tmp_path / "rt.safetensors")
    from stvsr_core.engine import predict_pair
    frames = list(Engine(again, "cpu", precision="fp32", scene_threshold=0).run(f))
    assert len(frames) == 5  # the engine composes the same single stream as the model
    assert torch.allclose(frames[3], predict_pair(again, f[1][None], f[2][None]).H_R[0].clamp(0, 1), atol=1e-4)


def test_no_refine_config_is_the_identity():
    """refine preset none (the realtime preset): H_R = H_F, no parameters."""
    from stvsr_core.refine import NoRefine
    m = DualStream({"scale": 2, "spatial": {"arch": "bicubic"}, "temporal": {"arch": "dis", "preset": "fast"},
                    "fusion": {"preset": "none"}, "refine": {"preset": "none"}}).eval()
    assert isinstance(m.R, NoRefine) and not list(m.parameters())
    f = real_frames(start=40, count=3, size=(64, 48))
    with torch.no_grad():
        out = m(f[0][None], f[2][None])
    assert torch.equal(out.H_R, out.H_F) and torch.equal(out.H_F, out.H_st)
