"""The streaming engine: order, counts, reuse of M_S, padding, tiling, scene cuts, bad input."""
import pytest
import torch

from stvsr_core import Engine, InputError, load_model
from stvsr_core.degrade import downsample
from stvsr_core.scenecut import DEFAULT_THRESHOLD, scene_score
from stvsr_core.tiling import pad_to_multiple

from helpers import CONFIGS, random_model, real_frames


def _spatial_ref(model, frame):
    with torch.no_grad():
        L = pad_to_multiple(frame[None], model.size_multiple)
        H = model.spatial(L)
    h, w = frame.shape[-2:]
    return H[0, :, : 2 * h, : 2 * w].clamp(0, 1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_count_order_and_passthrough_positions(name):
    model = random_model(CONFIGS[name])
    frames = real_frames(start=12, count=5, size=(160, 68))
    out = list(Engine(model, "cpu", scene_threshold=None, precision="fp32").run(iter(frames)))
    assert len(out) == 2 * 5 - 1
    assert all(o.shape == (3, 136, 320) for o in out)
    for k, f in enumerate(frames):  # output 2k is the SR of input k
        assert torch.allclose(out[2 * k], _spatial_ref(model, f), atol=1e-5)
    for k in range(4):  # the in-between frames are new frames, not copies
        assert not torch.allclose(out[2 * k + 1], out[2 * k], atol=1e-3)


def test_exact_double_repeats_last_frame():
    model = random_model()
    frames = real_frames(start=12, count=3, size=(96, 48))
    out = list(Engine(model, "cpu", exact_double=True, precision="fp32").run(frames))
    assert len(out) == 6 and torch.equal(out[-1], out[-2])


def test_spatial_network_runs_once_per_input_frame():
    model = random_model()
    calls = []
    model.M_S.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    frames = real_frames(start=12, count=6, size=(96, 48))
    engine = Engine(model, "cpu", scene_threshold=None, precision="fp32")
    list(engine.run(iter(frames)))
    # 6 input frames through M_S, plus one low-res in-between frame per pair for stream T->S
    lr_size = calls[0]
    inputs = [c for c in calls if c == lr_size]
    assert len(calls) == 6 + 5 and len(inputs) == 11
    assert engine.stats["spatial_calls"] == 6 and engine.stats["middle_calls"] == 5


@pytest.mark.parametrize("size", [(37, 29), (101, 55), (64, 64)])
def test_odd_sizes_are_padded_and_cropped_exactly(size):
    w, h = size
    model = random_model()
    frames = [torch.rand(3, h, w) for _ in range(3)]
    out = list(Engine(model, "cpu", precision="fp32").run(frames))
    assert [o.shape for o in out] == [(3, 2 * h, 2 * w)] * 5
    # away from the padded bottom/right edges the SR equals the network on the unpadded frame
    with torch.no_grad():
        ref = model.spatial(frames[0][None][..., : h // 2 * 2, : w // 2 * 2])[0].clamp(0, 1)
    m = 40  # twice the receptive field, in high-res pixels
    assert torch.allclose(out[0][:, : 2 * h - m, : 2 * w - m], ref[:, : 2 * h - m, : 2 * w - m], atol=1e-5)


def test_tiled_agrees_with_untiled_on_real_frames():
    """With the shipped model: tiles give the same SR frames and an in-between frame as good as untiled."""
    model = load_model("default")
    f = real_frames(start=40, count=3)  # real motion; the middle frame is the truth
    L = [downsample(x[None])[0] for x in (f[0], f[2])]
    full = list(Engine(model, "cpu", scene_threshold=None).run(L))
    tiled = list(Engine(model, "cpu", scene_threshold=None, tile=96, tile_pad=32).run(L))
    # spatial outputs: every tile sees its whole receptive field, so they agree to float precision
    assert (full[0] - tiled[0]).abs().max() < 1e-4
    # in-between frame: M_T sees whole frames (large motion crosses tiles); only the U-Net's
    # context differs per tile, and seams are feathered
    ps = lambda a, b: float(-10 * torch.log10((a - b).pow(2).mean()))
    assert ps(full[1], tiled[1]) > 50
    assert ps(tiled[1], f[1]) > ps(full[1], f[1]) - 0.05


def test_scene_cuts_of_the_bundled_clip():
    """bikes_short.mp4 has hard cuts after its frames 9 and 55, and fast motion before the second."""
    frames = real_frames()
    scores = [scene_score(a[None], b[None]) for a, b in zip(frames, frames[1:])]
    cuts = [i for i, s in enumerate(scores) if s > DEFAULT_THRESHOLD]
    assert cuts == [9, 55]
    assert max(s for i, s in enumerate(scores) if i not in cuts) < DEFAULT_THRESHOLD * 0.6


def test_engine_copies_nearer_frame_at_a_cut():
    model = random_model()
    frames = real_frames(start=8, count=4, size=(160, 68))  # pair (1, 2) straddles the cut
    engine = Engine(model, "cpu", precision="fp32")
    out = list(engine.run(frames))
    assert engine.stats["scene_cuts"] == 1
    assert torch.equal(out[3], out[2])           # the cut: previous frame repeated, no morph
    assert not torch.equal(out[1], out[0])       # other pairs interpolated
    off = list(Engine(model, "cpu", scene_threshold=0, precision="fp32").run(frames))
    assert not torch.equal(off[3], off[2])       # detection off: a morph


def test_progress_callback_counts_outputs():
    seen = []
    frames = real_frames(start=12, count=3, size=(96, 48))
    list(Engine(random_model(), "cpu").run(frames, total=3, progress=lambda d, n: seen.append((d, n))))
    assert seen == [(i, 5) for i in range(1, 6)]


@pytest.mark.parametrize("workers, lookahead", [(1, 2), (2, 3)])
def test_streaming_holds_only_a_pair(workers, lookahead):
    """A generator of frames is consumed lazily: output starts before the input ends, and with
    pairs computed in parallel the engine reads only one frame further ahead per extra worker."""
    consumed = []

    def gen():
        for i in range(50):
            consumed.append(i)
            yield torch.rand(3, 16, 16)

    it = Engine(random_model(), "cpu", workers=workers).run(gen())
    next(it), next(it), next(it)
    assert len(consumed) == lookahead


@pytest.mark.parametrize("frames, match", [
    ([torch.rand(3, 16, 16)], "at least 2 frames"),
    ([], "at least 2 frames"),
    ([torch.rand(3, 16, 16), torch.rand(3, 18, 16)], "one size"),
    ([torch.rand(4, 16, 16), torch.rand(4, 16, 16)], r"RGB tensor \[3, H, W\]"),
    ([torch.rand(3, 16, 16), torch.full((3, 16, 16), float("nan"))], "NaN"),
])
def test_bad_frames_are_rejected_clearly(frames, match):
    with pytest.raises(InputError, match=match):
        list(Engine(random_model(), "cpu").run(frames))


def test_device_and_precision_choices():
    from stvsr_core import select_device
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            select_device("cuda")
        with pytest.raises(InputError, match="fp16 needs a CUDA device"):
            Engine(random_model(), "cpu", precision="fp16")
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, fp16"):
        Engine(random_model(), "cpu", precision="int8")
