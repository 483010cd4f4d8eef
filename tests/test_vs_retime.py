"""The VapourSynth filter's timeline (issue 11): factor_num/factor_den and fps_num/fps_den as vs-rife
names them, _DurationNum/_DurationDen on every frame, spatial-only and temporal-only modes, M_S
once per source frame at any factor, identical frames in any request order, and a 4x model end
to end through vspipe. Real VapourSynth and real frames of the bundled clip, small sizes."""
import hashlib
import inspect
import os
import random
import shutil
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import DEMO, ROOT, random_model

if os.environ.get("STVSR_REQUIRE_VAPOURSYNTH") != "1":
    pytest.importorskip("vapoursynth", reason="VapourSynth needs Python >= 3.12: pip install 'stvsr[vapoursynth]'")
import vapoursynth as vs  # noqa: E402

from stvsr_core import Engine, load_model, save_weights  # noqa: E402
from stvsr_core.engine import EngineOptions  # noqa: E402
from vs_plugin import filter as vsf  # noqa: E402
from vs_plugin.shim.build import build  # noqa: E402

VSPIPE = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
X4_SHIPPED = ROOT / "stvsr_core" / "weights" / "stvsr-fast-x4.safetensors"
X4_CONFIG = {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
             "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
             "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}}
core = vs.core


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shim")
    lib = build(out)
    if not hasattr(core, "stvsr"):
        core.std.LoadPlugin(str(lib))
    return out


@pytest.fixture
def threads4():
    old = core.num_threads
    core.num_threads = 4
    yield
    core.num_threads = old


def rgb(first=6, count=6, fps=None):
    """Real frames (source frames 6..11 hold a hard cut after frame 9, local 3) at 160x68 RGBS."""
    clip = core.lsmas.LWLibavSource(str(DEMO), cache=0)[first:first + count]
    clip = clip.resize.Bicubic(160, 68, format=vs.RGBS, matrix_in_s="170m")
    return clip.std.AssumeFPS(fpsnum=fps.numerator, fpsden=fps.denominator) if fps else clip


def planes(frame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


def tensors(clip):
    return [torch.from_numpy(planes(clip.get_frame(i)).copy()) for i in range(clip.num_frames)]


def rendered(clip, order=None, threads=1):
    """Every frame of clip (as arrays), requested in `order` from `threads` threads."""
    order = list(range(clip.num_frames)) if order is None else order
    out = {}

    def work(idx):
        for n in idx:
            out[n] = planes(clip.get_frame(n)).copy()
    ts = [threading.Thread(target=work, args=(order[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [out[n] for n in range(clip.num_frames)]


def digest(frames):
    return [hashlib.sha1(f.tobytes()).hexdigest() for f in frames]


def props(clip):
    return [clip.get_frame(n).props for n in range(clip.num_frames)]


def engine_frames(clip, **options):
    """What Engine.run gives for the same RGB frames (the filter's defaults: exact_double on)."""
    engine = Engine(load_model("default"), "cpu", **{"exact_double": True, **options})
    return [f.numpy() for f in engine.run(tensors(clip), fps_in=clip.fps)]


# -- random access ---------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [(2, 1), (3, 1), (5, 2)], ids=["x2", "x3", "x5/2"])
def test_M_S_once_per_source_frame_in_any_order(shim_dir, threads4, factor):
    """The tests-only counter (the engine's Access behind last_worker): one M_S per source frame,
    in order and in reverse; the pair estimate once per pair."""
    src = rgb()
    for order in (None, "reverse"):
        out = core.stvsr.Upsample(src, factor_num=factor[0], factor_den=factor[1])
        rendered(out, None if order is None else list(range(out.num_frames))[::-1])
        acc = vsf.last_worker.access
        assert acc.spatial.computed == src.num_frames, order
        assert acc.estimates.computed <= src.num_frames - 1


@pytest.mark.parametrize("num_streams", [1, 2])
@pytest.mark.parametrize("factor", [(2, 1), (5, 2)], ids=["x2", "x5/2"])
def test_out_of_order_requests_give_identical_frames(shim_dir, threads4, num_streams, factor):
    src = rgb()
    kw = dict(factor_num=factor[0], factor_den=factor[1], num_streams=num_streams)
    reference = digest(rendered(core.stvsr.Upsample(src, **kw)))
    n = len(reference)
    shuffled = list(range(n)) * 2
    random.Random(num_streams).shuffle(shuffled)
    for order, threads in ((list(range(n))[::-1], 1), (shuffled, 4)):
        out = core.stvsr.Upsample(src, **kw)
        assert digest(rendered(out, order, threads)) == reference
        assert vsf.last_worker.access.spatial.computed == src.num_frames


def test_factor_2_equals_the_engine(shim_dir):
    """No behaviour change at factor 2: the frames of Engine.run (to 1e-5), the cut included."""
    src = rgb()
    got = rendered(core.stvsr.Upsample(src))
    expected = engine_frames(src)
    assert len(got) == len(expected) == 12
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got[7], got[6])  # the cut after local frame 3: a repeat


def test_fractional_factor_equals_the_engine_and_its_slots(shim_dir):
    """At 5/2 the filter gives Engine.run's frames on the same timeline; output 5 (p = 2) is
    source frame 2 upscaled, as in spatial-only mode."""
    src = rgb()
    got = rendered(core.stvsr.Upsample(src, factor_num=5, factor_den=2))
    expected = engine_frames(src, factor=Fraction(5, 2))
    assert len(got) == len(expected) == 15
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-5, rtol=0)
    spatial = rendered(core.stvsr.Upsample(src, factor_num=1))
    np.testing.assert_array_equal(got[5], spatial[2])
    np.testing.assert_array_equal(got[0], spatial[0])


# -- rates, counts, durations ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, rate, n_out", [
    (dict(fps_num=60000, fps_den=1001), Fraction(60000, 1001), (15, 13)),   # 5/2: ceil(6*5/2), floor(5*5/2)+1
    (dict(factor_num=3), Fraction(72000, 1001), (18, 16)),
    (dict(factor_num=3, fps_num=60000, fps_den=1001), Fraction(60000, 1001), (15, 13)),  # the fps target wins
])
def test_counts_rates_and_durations(shim_dir, kw, rate, n_out):
    src = rgb(fps=Fraction(24000, 1001))
    for exact_double, n in zip((True, False), n_out):
        out = core.stvsr.Upsample(src, exact_double=exact_double, **kw)
        assert out.num_frames == n and out.fps == rate
        for p in props(out):
            assert Fraction(p["_DurationNum"], p["_DurationDen"]) == 1 / rate


def test_scene_props_where_the_cut_falls_at_any_factor(shim_dir):
    """The real cut after local source frame 3: _SceneChangeNext on the last output frame of pair
    (3, 4), _SceneChangePrev on the first of source frame 4; that pair's in-between frames repeat
    frame 3."""
    src = rgb()
    for (num, den), last in (((2, 1), 7), ((3, 1), 11), ((5, 2), 9)):
        out = core.stvsr.Upsample(src, factor_num=num, factor_den=den)
        ps = props(out)
        assert [n for n, p in enumerate(ps) if p["_SceneChangeNext"]] == [last], (num, den)
        assert [n for n, p in enumerate(ps) if p["_SceneChangePrev"]] == [last + 1], (num, den)
        frames = rendered(out)
        first = -(-3 * num // den)  # ceil(3 * factor): source frame 3's first output frame
        for j in range(first + 1, last + 1):
            np.testing.assert_array_equal(frames[j], frames[first])


def test_own_scene_change_props_are_honoured_at_5_2(shim_dir):
    """A source frame's _SceneChangeNext decides for its pair (no cut in frames 20..23 otherwise)."""
    src = rgb(20, 4).std.SetFrameProps(_SceneChangeNext=0)
    tagged = src[:1] + src[1].std.SetFrameProps(_SceneChangeNext=1) + src[2:]
    frames = rendered(core.stvsr.Upsample(tagged, factor_num=5, factor_den=2))
    # source 1 is output 2.5 (not shown); outputs 3 and 4 lie between 1 and 2: copies of frame 1's upscale
    np.testing.assert_array_equal(frames[3], frames[4])
    plain = rendered(core.stvsr.Upsample(src, factor_num=5, factor_den=2))
    assert not np.array_equal(plain[3], plain[4])
    ps = props(core.stvsr.Upsample(tagged, factor_num=5, factor_den=2))
    assert [n for n, p in enumerate(ps) if p["_SceneChangeNext"]] == [4]
    assert [n for n, p in enumerate(ps) if p["_SceneChangePrev"]] == [5]


def variable_rate():
    """Real frames at a variable frame rate (fps 0): 25 fps then 50 fps."""
    a, b = rgb(20, 3), rgb(23, 3).std.AssumeFPS(fpsnum=50, fpsden=1)
    return core.std.Splice([a, b], mismatch=True)


def test_variable_frame_rate_integer_factor_divides_each_duration(shim_dir):
    clip = variable_rate()
    assert clip.fps == 0
    out = core.stvsr.Upsample(clip, factor_num=3)
    assert out.fps == 0 and out.num_frames == 18
    durations = [Fraction(p["_DurationNum"], p["_DurationDen"]) for p in props(out)]
    assert durations == [Fraction(1, 75)] * 9 + [Fraction(1, 150)] * 9


@pytest.mark.parametrize("kw, message", [
    (dict(fps_num=60), "fps_num/fps_den need a constant frame rate, but the clip's is variable (fps 0)"),
    (dict(factor_num=5, factor_den=2), "a variable-frame-rate clip (fps 0) takes an integer factor"),
])
def test_variable_frame_rate_refusals(shim_dir, kw, message):
    with pytest.raises(vs.Error) as e:
        core.stvsr.Upsample(variable_rate(), **kw)
    assert message in str(e.value) and "\n" not in str(e.value)


# -- spatial-only and temporal-only ----------------------------------------------------------------

def test_spatial_only(shim_dir):
    """factor 1: one output frame per source frame, the factor-2 run's upscaled frames, the rate and
    the source's own props (scene-change tags included) kept."""
    src = rgb().std.SetFrameProps(_SceneChangeNext=0, Tag=7)
    out = core.stvsr.Upsample(src, factor_num=1)
    assert (out.num_frames, out.fps, out.width, out.height) == (6, src.fps, 320, 136)
    assert all(p["Tag"] == 7 and p["_SceneChangeNext"] == 0 and (p["_DurationNum"], p["_DurationDen"]) == (1, 25)
               for p in props(out))
    frames = rendered(out)
    stats = vsf.last_worker.engine.stats
    assert stats["middle_calls"] == stats["estimates"] == 0  # M_T never runs
    double = rendered(core.stvsr.Upsample(src))
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, double[2 * k])


def test_temporal_only(shim_dir):
    """upscale=False: frames keep their size, source frames come back as they are, the in-between
    ones from M_T at the input's size (Engine.run's frames with upscale off)."""
    src = rgb(20, 4)
    out = core.stvsr.Upsample(src, upscale=False)
    assert (out.num_frames, out.width, out.height, out.fps) == (8, 160, 68, src.fps * 2)
    got = rendered(out)
    np.testing.assert_allclose(got[2], planes(src.get_frame(1)).clip(0, 1), atol=1e-6)
    np.testing.assert_allclose(np.stack(got), np.stack(engine_frames(src, upscale=False)), atol=1e-5, rtol=0)
    assert vsf.last_worker.engine.stats["spatial_calls"] == 0


# -- arguments -------------------------------------------------------------------------------------

def test_defaults_come_from_engine_options():
    d, sig = EngineOptions(), inspect.signature(vsf.upsample).parameters
    assert sig["tile"].default == d.tile and sig["tile_pad"].default == d.tile_pad
    assert sig["sc_threshold"].default == d.scene_threshold and sig["backend"].default == d.backend
    assert sig["upscale"].default == d.upscale and sig["precision"].default == d.precision
    assert Fraction(sig["factor_num"].default, sig["factor_den"].default) == Fraction(d.factor)
    assert sig["exact_double"].default is True  # the filter keeps the duration (as vs-rife)


@pytest.mark.parametrize("kw, message", [
    (dict(factor_num=0), "factor_num must be an integer >= 1, got 0"),
    (dict(factor_den=0), "factor_den must be an integer >= 1, got 0"),
    (dict(fps_num=0), "fps_num must be an integer >= 1, got 0"),
    (dict(fps_den=1001), "fps_den=1001 needs fps_num as well"),
    (dict(fps_num=10), "the target rate is 5/12 times the clip's: this filter adds frames and never drops them"),
    (dict(factor_num=1, upscale=False), "temporal-only (upscale off) with factor 1 leaves nothing to do"),
    (dict(upscale=3), "upscale must be True or False"),
    (dict(precision="int8"), "precision must be one of auto, fp32, bf16, fp16, got 'int8'"),
    (dict(precision="fp32", fp16=True), "precision='fp32' and fp16=True both set the precision"),
    (dict(fp16=True, bf16=True), "fp16 and bf16 are both on: pick one precision"),
])
def test_rejected_retime_and_precision_arguments(shim_dir, kw, message):
    clip = core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=2)  # 24 fps
    with pytest.raises(vs.Error) as e:
        core.stvsr.Upsample(clip, **kw)
    text = str(e.value)
    assert message in text and text.startswith("stvsr.Upsample: ") and "\n" not in text, text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal off CUDA")
def test_fp16_off_cuda_is_one_error(shim_dir):
    clip = core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=2)
    for kw in (dict(fp16=True), dict(precision="fp16")):
        with pytest.raises(vs.Error, match=r"^stvsr.Upsample: fp16 needs a CUDA device, but this runs on cpu"):
            core.stvsr.Upsample(clip, device="cpu", **kw)


def test_precision_fp32_equals_fp16_off(shim_dir):
    src = rgb(20, 2)
    a = rendered(core.stvsr.Upsample(src, precision="fp32", exact_double=False))
    b = rendered(core.stvsr.Upsample(src, fp16=False, exact_double=False))
    assert digest(a) == digest(b)
    assert str(vsf.last_worker.engine.runtime).split(", ")[1] == "fp32"


# -- a 4x model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def x4_model(tmp_path_factory):
    """The shipped stvsr-fast-x4 when present, else an untrained model of the same shape."""
    if X4_SHIPPED.is_file():
        return "stvsr-fast-x4"
    path = tmp_path_factory.mktemp("x4") / "x4.safetensors"
    save_weights(random_model(X4_CONFIG), path, description="untrained 4x, for tests")
    return str(path)


def test_4x_model_scale_from_its_descriptor(shim_dir, x4_model):
    src = rgb(20, 2)
    out = core.stvsr.Upsample(src, model=x4_model, factor_num=3)
    assert vsf.last_worker.engine.info.scale == 4
    assert (out.width, out.height, out.num_frames) == (640, 272, 6)
    got = rendered(out)
    engine = Engine(load_model(x4_model), "cpu", factor=3, exact_double=True)
    expected = [f.numpy() for f in engine.run(tensors(src))]
    np.testing.assert_allclose(np.stack(got), np.stack(expected), atol=1e-5, rtol=0)


def test_4x_model_through_vspipe_y4m(shim_dir, x4_model, tmp_path):
    """vspipe -c y4m end to end: a tagged YUV 4:2:0 clip of real frames, a 4x model at factor 3."""
    script = tmp_path / "x4.vpy"
    script.write_text(
        "import vapoursynth as vs\ncore = vs.core\n"
        f"clip = core.lsmas.LWLibavSource({str(DEMO)!r}, cache=0)[20:23]\n"
        "clip = clip.resize.Bicubic(160, 68, format=vs.YUV420P8, matrix_in_s='170m', matrix_s='709')\n"
        "clip = clip.std.SetFrameProps(_Matrix=1, _Transfer=1, _Primaries=1, _Range=0)\n"
        f"core.stvsr.Upsample(clip, model={x4_model!r}, factor_num=3, device='cpu').set_output()\n")
    env = dict(os.environ, VAPOURSYNTH_EXTRA_PLUGIN_PATH=str(shim_dir), PYTHONPATH=str(ROOT))
    r = subprocess.run([VSPIPE, "-c", "y4m", str(script), "-"], env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    header, _, rest = r.stdout.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 C420 W640 H272 F75:1"), header
    frame_bytes = 640 * 272 * 3 // 2
    assert rest.count(b"FRAME\n") == 9 and len(rest) == 9 * (len(b"FRAME\n") + frame_bytes)
    y = np.frombuffer(rest[len(b"FRAME\n"):][:640 * 272], np.uint8).astype(np.float64)
    assert 16 <= y.min() and y.max() <= 235 and y.std() > 5  # limited range kept, a real picture
    if X4_SHIPPED.is_file():  # a trained model: the levels of the source
        src = core.lsmas.LWLibavSource(str(DEMO), cache=0)[20].resize.Bicubic(160, 68)
        assert abs(y.mean() - np.asarray(src.get_frame(0)[0]).mean()) < 2



def test_fps_target_at_the_clip_s_rate_is_spatial_only(shim_dir):
    src = rgb(20, 3)
    out = core.stvsr.Upsample(src, fps_num=25)
    assert (out.num_frames, out.fps) == (3, src.fps)
    assert digest(rendered(out)) == digest(rendered(core.stvsr.Upsample(src, factor_num=1)))
    assert vsf.last_worker.engine.stats["estimates"] == 0
