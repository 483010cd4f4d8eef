"""The VapourSynth filter in the real VapourSynth (R70+, Python >= 3.12): the C shim, vspipe,
the example scripts, frame-for-frame agreement with stvsr_core's engine, concurrency, formats
and every rejected input. CI sets STVSR_REQUIRE_VAPOURSYNTH=1 so these fail, not skip, there."""
import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers import DEMO, ROOT

if os.environ.get("STVSR_REQUIRE_VAPOURSYNTH") != "1":
    pytest.importorskip("vapoursynth", reason="VapourSynth needs Python >= 3.12: pip install 'stvsr[vapoursynth]'")
import vapoursynth as vs  # noqa: E402

from stvsr_core import Engine, load_model  # noqa: E402
from vs_plugin.shim.build import build, vapoursynth_include  # noqa: E402

VSPIPE = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
core = vs.core


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    """The shim compiled from this checkout; loaded into this process's core once."""
    out = tmp_path_factory.mktemp("shim")
    lib = build(out)
    if not hasattr(core, "stvsr"):  # an installed wheel's copy may already be autoloaded
        core.std.LoadPlugin(str(lib))
    return out


def env_with(shim_dir, **extra):
    env = dict(os.environ, VAPOURSYNTH_EXTRA_PLUGIN_PATH=str(shim_dir), PYTHONPATH=str(ROOT), **extra)
    return env


def source(first=0, count=None):
    """Real frames of the bundled clip through a real source plugin (L-SMASH Works)."""
    clip = core.lsmas.LWLibavSource(str(DEMO), cache=0)
    return clip[first: first + count] if count else clip[first:]


def planes(frame) -> np.ndarray:
    """All planes of a frame; planes of subsampled formats are flattened and joined."""
    arrays = [np.asarray(frame[p]) for p in range(frame.format.num_planes)]
    if len({a.shape for a in arrays}) > 1:
        return np.concatenate([a.ravel() for a in arrays])
    return np.stack(arrays)


def frame_hashes(clip, order=None, threads=1):
    order = list(range(clip.num_frames)) if order is None else order
    out = {}

    def work(idx):
        for n in idx:
            out[n] = hashlib.sha1(planes(clip.get_frame(n)).tobytes()).hexdigest()
    chunks = [order[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [out[n] for n in range(clip.num_frames)]


# -- the shim ------------------------------------------------------------------------------------

def test_shim_registers_namespace_and_forwards(shim_dir):
    clip = core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=3, fpsnum=30000, fpsden=1001)
    out = core.stvsr.Upsample(clip)
    assert (out.width, out.height, out.num_frames) == (128, 96, 6)
    assert (out.fps.numerator, out.fps.denominator) == (60000, 1001)
    assert out.format.id == vs.RGBS


def test_shim_found_through_extra_plugin_path(shim_dir):
    code = ("import vapoursynth as vs; c = vs.core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=2);"
            "print(vs.core.stvsr.Upsample(c, exact_double=False).num_frames)")
    r = subprocess.run([sys.executable, "-c", code], env=env_with(shim_dir), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_shim_autoloads_from_an_installed_wheel(tmp_path):
    """pip builds the wheel with the shim inside vapoursynth/plugins/, as the plugin wheels do."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("stvsr-*.whl"))
    assert "py3-none-any" not in wheel.name  # a platform wheel: it carries native code
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    assert (target / "vapoursynth" / "plugins" / "stvsr" / "libstvsr.so").is_file()
    # the plugins folder only autoloads beside VapourSynth itself: give the wheel's a copy of it
    shutil.copytree(Path(vs.__file__).parent, target / "vapoursynth", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("plugins"))
    code = ("import vapoursynth as vs, stvsr_core; assert stvsr_core.__file__.startswith(%r);"
            "c = vs.core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=2);"
            "print(vs.core.stvsr.Upsample(c).num_frames)" % str(target))
    env = {k: v for k, v in os.environ.items() if k != "VAPOURSYNTH_EXTRA_PLUGIN_PATH"}
    r = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=str(target)), capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"


def test_shim_in_a_host_without_python_errors_cleanly(shim_dir, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    vsdir = Path(vs.__file__).parent
    lib = next(vsdir.glob("libvapoursynth.so*"))
    host = tmp_path / "host"
    subprocess.run([cc, f"-I{vapoursynth_include()}", str(ROOT / "tests" / "data" / "vs_host_without_python.c"),
                    "-o", str(host), str(lib), f"-Wl,-rpath,{vsdir}"], check=True)
    r = subprocess.run([str(host)], env=env_with(shim_dir), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "no Python interpreter" in r.stdout


# -- vspipe and the example scripts --------------------------------------------------------------

@pytest.mark.parametrize("script", ["stvsr_upsample.vpy", "stvsr_restore_chain.vpy"])
def test_example_scripts_info(shim_dir, script):
    r = subprocess.run([VSPIPE, "--info", str(ROOT / "workflows" / script)], env=env_with(shim_dir),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    src = source()
    assert f"Frames: {2 * src.num_frames}" in r.stdout
    assert f"FPS: {2 * src.fps.numerator}/{src.fps.denominator}" in r.stdout
    assert f"Width: {2 * src.width}" in r.stdout and f"Height: {2 * src.height}" in r.stdout


def test_vspipe_render_equals_engine(shim_dir, tmp_path):
    """vspipe renders real frames (with a hard cut, after source frame 9) exactly as Engine.run."""
    first, count = 6, 7
    script = tmp_path / "render.vpy"
    script.write_text(
        "import vapoursynth as vs\ncore = vs.core\n"
        f"clip = core.lsmas.LWLibavSource({str(DEMO)!r}, cache=0)[{first}:{first + count}]\n"
        "clip = clip.resize.Bicubic(format=vs.RGBS, matrix_in_s='170m')\n"
        "core.stvsr.Upsample(clip).set_output()\n")
    raw = tmp_path / "out.raw"
    r = subprocess.run([VSPIPE, "-p", str(script), str(raw)], env=env_with(shim_dir), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    w, h = 2 * 640, 2 * 272
    # vspipe writes RGB planes in G, B, R order (like ffmpeg's gbrp): put them back as R, G, B
    rendered = np.fromfile(raw, dtype=np.float32).reshape(-1, 3, h, w)[:, [2, 0, 1]]
    assert rendered.shape[0] == 2 * count

    rgb = source(first, count).resize.Bicubic(format=vs.RGBS, matrix_in_s="170m")
    frames = [torch.from_numpy(planes(rgb.get_frame(i)).copy()) for i in range(count)]
    engine = Engine(load_model("default"), "cpu", exact_double=True)
    expected = np.stack([f.numpy() for f in engine.run(frames)])
    assert engine.stats["scene_cuts"] == 1  # the cut after source frame 9 is inside the range
    np.testing.assert_allclose(rendered, expected, atol=1e-5, rtol=0)
    k = 9 - first  # across the cut, the in-between frame repeats the frame before
    np.testing.assert_array_equal(rendered[2 * k + 1], rendered[2 * k])


# -- behaviour -----------------------------------------------------------------------------------

def test_frame_counts_fps_durations_and_scene_props(shim_dir):
    src = source(6, 6)  # source frames 6..11, cut after 9 (local 3)
    out = core.stvsr.Upsample(src)
    assert out.num_frames == 12 and core.stvsr.Upsample(src, exact_double=False).num_frames == 11
    assert out.fps == src.fps * 2
    props = [out.get_frame(n).props for n in range(out.num_frames)]
    for p in props:
        assert (p["_DurationNum"], p["_DurationDen"]) == (1, 50)
    assert [n for n, p in enumerate(props) if p["_SceneChangeNext"]] == [7]
    assert [n for n, p in enumerate(props) if p["_SceneChangePrev"]] == [8]
    assert out.format.id == src.format.id  # YUV in, YUV out


def test_scene_change_props_of_the_clip_are_honoured(shim_dir):
    src = source(20, 4).resize.Bicubic(format=vs.RGBS, matrix_in_s="170m")  # no cut here
    tagged = src.std.SetFrameProps(_SceneChangeNext=0)
    tagged = tagged[:1] + tagged[1].std.SetFrameProps(_SceneChangeNext=1) + tagged[2:]
    out = core.stvsr.Upsample(tagged)
    a, b, c = (planes(out.get_frame(n)) for n in (2, 3, 4))
    np.testing.assert_array_equal(a, b)        # the tagged pair (1, 2): a repeat
    assert not np.array_equal(b, c)
    plain = core.stvsr.Upsample(src)
    assert not np.array_equal(planes(plain.get_frame(3)), planes(plain.get_frame(2)))
    off = core.stvsr.Upsample(tagged, sc=False)
    assert not np.array_equal(planes(off.get_frame(3)), planes(off.get_frame(2)))


def test_each_source_frame_goes_through_M_S_once(shim_dir):
    from vs_plugin import filter as vsf
    out = core.stvsr.Upsample(source(20, 6).resize.Bicubic(format=vs.RGBS, matrix_in_s="170m"))
    frame_hashes(out)
    assert vsf.last_worker.access.spatial.computed == 6


def test_out_of_order_concurrent_requests_give_identical_output(shim_dir):
    rgb = source(20, 8).resize.Bicubic(format=vs.RGBS, matrix_in_s="170m")
    reference = frame_hashes(core.stvsr.Upsample(rgb))
    old = core.num_threads
    core.num_threads = 4
    try:
        out = core.stvsr.Upsample(rgb, num_streams=4)
        order = list(range(out.num_frames)) * 2
        random.Random(0).shuffle(order)
        assert frame_hashes(out, order=order, threads=8) == reference
    finally:
        core.num_threads = old


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV444P16, vs.GRAY8, vs.RGB24, vs.RGBH, vs.RGBS])
def test_formats_convert_in_and_back(shim_dir, fmt):
    src = source(20, 2)
    clip = src.resize.Bicubic(format=fmt, matrix_in_s="170m", matrix_s="170m" if fmt in (vs.YUV444P16, vs.GRAY8) else None)
    out = core.stvsr.Upsample(clip)
    assert out.format.id == fmt and (out.width, out.height) == (1280, 544)
    up = planes(out.get_frame(1)).astype(np.float32)
    assert np.isfinite(up).all() and up.std() > 0


def test_rgbh_matches_rgbs_closely(shim_dir):
    rgbs = source(20, 2).resize.Bicubic(format=vs.RGBS, matrix_in_s="170m")
    a, b = core.stvsr.Upsample(rgbs), core.stvsr.Upsample(rgbs.resize.Point(format=vs.RGBH))
    diff = [np.abs(planes(a.get_frame(n)) - planes(b.get_frame(n)).astype(np.float32)) for n in (0, 1)]
    assert diff[0].max() < 0.01  # the upscaled frame: fp16 rounding of input and output only
    # the in-between frame: fp16 rounding can move DIS's 8-bit luma, and with it a few flow vectors
    assert diff[1].mean() < 2e-3


@pytest.mark.parametrize("kwargs, message", [
    (dict(foo=1), "does not take argument(s) named foo"),
    (dict(tile=-1), "tile must be an integer >= 0"),
    (dict(tile_pad=-2), "tile_pad must be an integer >= 0"),
    (dict(num_streams=0), "num_streams must be an integer >= 1"),
    (dict(num_streams=64), "must not exceed core.num_threads"),
    (dict(model="no-such-model"), "neither a shipped model"),
    (dict(device="tpu"), "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (dict(device="cuda:x"), "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (dict(matrix_in_s="bt709"), "matrix_in_s must be one of 709, fcc, 470bg, 170m"),
    (dict(device="cpu", device_index=1), "device_index=1 picks a CUDA GPU, but this filter runs on cpu"),
    (dict(device="cuda:0", device_index=1), "device='cuda:0' and device_index=1 name different GPUs"),
    (dict(device_index=-1), "device_index must be an integer >= 0"),
    (dict(sc_threshold=0.0), "sc_threshold must be a number in (0, 1]"),
    (dict(sc=5), "sc must be True or False"),
    (dict(exact_double=2), "exact_double must be True or False"),
    (dict(backend="tensorrt"), "backend must be one of torch, torch-compile, openvino, openvino-bf16"),
])
def test_rejected_arguments(shim_dir, kwargs, message):
    clip = core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=2)
    with pytest.raises(vs.Error, match=None) as e:
        core.stvsr.Upsample(clip, **kwargs)
    assert message in str(e.value)


def test_rejected_clips(shim_dir, tmp_path):
    one = core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=1)
    mixed = core.std.Splice([one * 2, one.resize.Point(16, 16)], mismatch=True)
    cases = [(one, "at least 2"), (mixed, "changes format or size")]
    if not torch.cuda.is_available():
        cases.append(((one * 2, dict(fp16=True)), "fp16 needs a CUDA device"))
        cases.append(((one * 2, dict(device="cuda")), "CUDA is not available"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    cases.append(((one * 2, dict(model=str(bad))), "bad.safetensors"))
    for case, message in cases:
        clip, kw = case if isinstance(case, tuple) else (case, {})
        with pytest.raises(vs.Error) as e:
            core.stvsr.Upsample(clip, **kw)
        assert message in str(e.value), str(e.value)


def test_python_function_is_importable_directly(shim_dir):
    from vs_plugin import upsample
    out = upsample(core.std.BlankClip(width=32, height=32, format=vs.RGBS, length=3), exact_double=False)
    assert out.num_frames == 5


def test_nothing_printed_to_stdout(shim_dir, tmp_path):
    """vspipe writes video to stdout: the filter must not print there (y4m stays parseable)."""
    script = tmp_path / "y4m.vpy"
    script.write_text(
        "import vapoursynth as vs\ncore = vs.core\n"
        f"clip = core.lsmas.LWLibavSource({str(DEMO)!r}, cache=0)[:2]\n"
        "core.stvsr.Upsample(clip).set_output()\n")
    r = subprocess.run([VSPIPE, "-c", "y4m", str(script), "-"], env=env_with(shim_dir), capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    header, _, rest = r.stdout.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2 C420 W1280 H544 F50:1")
    frame_bytes = 1280 * 544 * 3 // 2
    assert rest.count(b"FRAME\n") == 4 and len(rest) == 4 * (len(b"FRAME\n") + frame_bytes)


def test_quality_model_in_the_filter(shim_dir, monkeypatch, tmp_path):
    """model="stvsr-quality": the pretrained backbones through the same filter, equal to the engine;
    without them installed, one vs.Error naming the command that installs them."""
    from stvsr_core.backbones import store
    if not all(store.installed(n) for n in ("spanx2_ch48", "rife-4.25")):
        from helpers import require_backbones
        require_backbones("stvsr-quality's backbones are not installed")
    rgb = source(40, 2).resize.Bicubic(width=160, height=68, format=vs.RGBS, matrix_in_s="170m")
    out = core.stvsr.Upsample(rgb, model="stvsr-quality", exact_double=False)
    assert (out.num_frames, out.width, out.height) == (3, 320, 136)
    got = np.stack([planes(out.get_frame(i)) for i in range(3)])
    frames = [torch.from_numpy(planes(rgb.get_frame(i)).copy()) for i in range(2)]
    expected = np.stack([f.numpy() for f in Engine(load_model("stvsr-quality"), "cpu").run(frames)])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    monkeypatch.setenv("STVSR_BACKBONES", str(tmp_path))
    monkeypatch.setattr("vs_plugin.filter._MODELS", {})
    with pytest.raises(vs.Error, match="stvsr fetch-backbones"):
        core.stvsr.Upsample(rgb, model="stvsr-quality")


# -- colour levels and tags ----------------------------------------------------------------------

COLOUR_PROPS = ("_Matrix", "_Range", "_Transfer", "_Primaries", "_ChromaLocation")


def tagged_file(path, rng, first=20, count=3):
    """Real frames of the bundled clip as an H.264 file tagged BT.709 and `rng` ("limited" or
    "full"; a full-range file gets its levels stretched to 0..255, as a camera records them)."""
    code = {"limited": 1, "full": 2}[rng]  # FFmpeg's MPEG / JPEG range
    with av.open(str(DEMO)) as src, av.open(str(path), "w") as dst:
        s = dst.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 640, 272, "yuv420p", {"crf": "12"}
        cc = s.codec_context
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = code, 1, 1, 1
        for i, f in enumerate(src.decode(video=0)):
            if i >= first + count:
                break
            if i >= first:
                yuv = f.reformat(format="yuv420p", src_color_range=1, dst_color_range=code).to_ndarray()
                g = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                g.color_range, g.colorspace = code, 1
                for packet in s.encode(g):
                    dst.mux(packet)
        for packet in s.encode():
            dst.mux(packet)
    return path


def luma_levels(frame) -> np.ndarray:
    """Mean, 1st and 99th percentile of Y (or GRAY), in 8-bit units."""
    y = np.asarray(frame[0]).astype(np.float64)
    fmt = frame.format
    y = y * 255 if fmt.sample_type == vs.FLOAT else y / (1 << (fmt.bits_per_sample - 8))
    return np.array([y.mean(), *np.percentile(y, [1, 99])])


def tags(frame) -> dict:
    return {k: int(frame.props[k]) if k in frame.props else None for k in COLOUR_PROPS}


@pytest.mark.parametrize("rng", ["limited", "full"])
def test_bestsource_file_keeps_levels_and_tags(shim_dir, tmp_path, rng):
    """A real tagged H.264 file through BestSource: the upscaled frame has the source's levels
    (mean and percentiles of Y) and every colour tag."""
    clip = core.bs.VideoSource(str(tagged_file(tmp_path / f"{rng}.mp4", rng)))
    src = clip.get_frame(0)
    assert tags(src)["_Range"] == {"limited": 0, "full": 1}[rng] and tags(src)["_Matrix"] == 1
    out = core.stvsr.Upsample(clip).get_frame(0)
    assert tags(out) == tags(src)
    np.testing.assert_allclose(luma_levels(out), luma_levels(src), atol=1.0)


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.YUV422P16, vs.YUV444P8, vs.YUV444PH, vs.YUV444PS,
                                 vs.GRAY8, vs.GRAY16, vs.GRAYS], ids=lambda f: f.name)
@pytest.mark.parametrize("rng", ["limited", "full", None])
def test_levels_and_tags_in_every_format(shim_dir, fmt, rng):
    """Limited, full and untagged clips of real frames in integer and float YUV and GRAY: the
    levels are kept, and so are the tags; an untagged clip comes back tagged with the convention
    it was read with (limited range; 170m for this SD size)."""
    yuv = vs.core.get_video_format(fmt).color_family == vs.YUV
    clip = source(20, 2).resize.Bicubic(320, 136, format=fmt, matrix_in_s="170m", matrix_s="170m" if yuv else None,
                                        range_s=rng or "limited")
    if rng is None:
        clip = clip.std.RemoveFrameProps(["_Range", "_Matrix"])
    src = clip.get_frame(0)
    out = core.stvsr.Upsample(clip).get_frame(0)
    expected = tags(src)
    if rng is None:
        expected.update(_Range=0, _Matrix=6 if yuv else None)
    assert tags(out) == expected
    np.testing.assert_allclose(luma_levels(out), luma_levels(src), atol=1.0)


def test_super_whites_are_clipped(shim_dir):
    """The documented rule: the engine works on RGB 0..1 (as the CLI), so limited-range values
    above 235 come back as 235; a full-range clip keeps its whites up to 255."""
    lifted = source(20, 2).std.Expr(["x 40 +", ""])  # real frames with highlights up to 255
    assert np.asarray(lifted.get_frame(0)[0]).max() > 245
    limited = core.stvsr.Upsample(lifted.std.SetFrameProps(_Range=0)).get_frame(0)
    full = core.stvsr.Upsample(lifted.std.SetFrameProps(_Range=1)).get_frame(0)
    assert np.asarray(limited[0]).max() == 235
    assert np.asarray(full[0]).max() > 245


def y4m_luma(data: bytes):
    """(header, Y plane of every frame) of a 4:2:0 8-bit y4m stream."""
    header, _, rest = data.partition(b"\n")
    fields = {f[:1]: f[1:] for f in header.split()[1:]}
    w, h = int(fields[b"W"]), int(fields[b"H"])
    frames = []
    while rest.startswith(b"FRAME"):
        rest = rest[rest.index(b"\n") + 1:]
        frames.append(np.frombuffer(rest[:w * h], np.uint8).reshape(h, w))
        rest = rest[w * h * 3 // 2:]
    return header, frames


@pytest.mark.parametrize("rng", ["limited", "full"])
def test_vspipe_y4m_keeps_levels_and_matches_the_cli(shim_dir, tmp_path, rng):
    """vspipe -c y4m end to end on a real tagged file: Y levels as in the source, and Y agrees
    with the CLI's output of the same file (its RGB PNGs taken back to BT.709 Y in `rng`)."""
    video = tagged_file(tmp_path / f"{rng}.mp4", rng, count=2)
    script = tmp_path / "y4m.vpy"
    script.write_text("import vapoursynth as vs\n"
                      f"vs.core.stvsr.Upsample(vs.core.bs.VideoSource({str(video)!r})).set_output()\n")
    r = subprocess.run([VSPIPE, "-c", "y4m", str(script), "-"], env=env_with(shim_dir), capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    header, frames = y4m_luma(r.stdout)
    assert header.startswith(b"YUV4MPEG2 C420 W1280 H544") and len(frames) == 4
    src = core.bs.VideoSource(str(video)).get_frame(0)
    y = frames[0].astype(np.float64)
    np.testing.assert_allclose([y.mean(), *np.percentile(y, [1, 99])], luma_levels(src), atol=1.0)

    pngs = tmp_path / "cli"
    cli = subprocess.run([sys.executable, "-m", "stvsr_core.cli", "upsample", str(video), "-o", str(pngs),
                          "--device", "cpu", "--exact-double"], env=env_with(shim_dir), capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    from PIL import Image
    for n in (0, 1):  # an upscaled frame and an in-between one
        rgb = np.asarray(Image.open(pngs / f"{n:06d}.png").convert("RGB")).astype(np.float64)
        luma = rgb @ [0.2126, 0.7152, 0.0722]
        cli_y = luma if rng == "full" else 16 + luma * 219 / 255
        mse = np.mean((frames[n].astype(np.float64) - cli_y) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 38, n


# -- scene-change props on some frames only ------------------------------------------------------

def test_scene_change_props_on_some_frames_only(shim_dir):
    """Props set before a splice: the tagged part is honoured, the untagged part (with the real
    cut after source frame 9) gets the filter's own detection; no KeyError at render."""
    src = source(6, 6)  # cut after local frame 3
    tagged = src[:2].std.SetFrameProps(_SceneChangeNext=0)
    tagged = tagged[0].std.SetFrameProps(_SceneChangeNext=1) + tagged[1]  # a cut the detector would not see
    out = core.stvsr.Upsample(tagged + src[2:])
    props = [out.get_frame(n).props for n in range(out.num_frames)]
    assert [n for n, p in enumerate(props) if p["_SceneChangeNext"]] == [1, 7]
    np.testing.assert_array_equal(planes(out.get_frame(1)), planes(out.get_frame(0)))


# -- arguments: types, matrix, devices -----------------------------------------------------------

def test_python_function_validates_types(shim_dir):
    from vs_plugin import upsample
    clip = source(20, 2)
    for kwargs, message in [(dict(model=5), "model must be a shipped model name or a .safetensors path, got 5"),
                            (dict(device=0), "device must be 'auto'"), (dict(matrix_in_s=709), "matrix_in_s must be")]:
        with pytest.raises(vs.Error, match="^stvsr.Upsample: ") as e:
            upsample(clip, **kwargs)
        assert message in str(e.value)


def test_cuda_device_with_index_as_in_the_cli(shim_dir):
    clip = source(20, 2).resize.Bicubic(160, 68)
    if torch.cuda.is_available():
        assert core.stvsr.Upsample(clip, device="cuda:0").get_frame(0)
        return
    with pytest.raises(vs.Error, match="CUDA is not available"):
        core.stvsr.Upsample(clip, device="cuda:0")


# -- errors and signature ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(tile=-1), dict(model="no-such-model"), dict(matrix_in_s="bt709"),
                                    dict(device="tpu"), dict(device="cpu", device_index=2)])
def test_errors_are_one_line_without_traceback(shim_dir, kwargs):
    clip = source(20, 2)
    with pytest.raises(vs.Error) as e:
        core.stvsr.Upsample(clip, **kwargs)
    message = str(e.value)
    assert message.startswith("stvsr.Upsample: ") and "\n" not in message and "Traceback" not in message


def test_vspipe_prints_the_message_without_our_traceback(shim_dir, tmp_path):
    script = tmp_path / "bad.vpy"
    script.write_text("import vapoursynth as vs\n"
                      f"vs.core.stvsr.Upsample(vs.core.bs.VideoSource({str(DEMO)!r}), tile=-1).set_output()\n")
    r = subprocess.run([VSPIPE, "--info", str(script)], env=env_with(shim_dir), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "stvsr.Upsample: tile must be an integer >= 0, got -1" in r.stderr
    assert "bridge.py" not in r.stderr and "filter.py" not in r.stderr, r.stderr


def test_signature_is_the_filter_s(shim_dir):
    """The shim registers upsample()'s own arguments, in order: .signature documents the filter,
    positional arguments work, and no internal function shows in core.stvsr."""
    import inspect
    from vs_plugin.filter import upsample
    names = [arg.split(":")[0] for arg in core.stvsr.Upsample.signature.split(";") if arg]
    assert names == list(inspect.signature(upsample).parameters)
    assert [f.name for f in core.stvsr.functions()] == ["Upsample"]
    clip = source(20, 2).resize.Bicubic(160, 68)
    assert core.stvsr.Upsample(clip, "default", 0, "cpu").num_frames == 4
    assert clip.stvsr.Upsample(exact_double=False).num_frames == 3


# -- alpha ---------------------------------------------------------------------------------------

def test_alpha_is_dropped_with_a_warning(shim_dir):
    """A clip carrying _Alpha: the output frames carry none (not the old-size one), the log says
    so once with the fix, and the documented recipe gives an alpha at the new size."""
    clip = source(20, 2).resize.Bicubic(160, 68)
    alpha = clip.std.ShufflePlanes(0, vs.GRAY).std.Binarize(100)  # a real-frame matte
    with_alpha = clip.std.ClipToProp(alpha, "_Alpha")
    messages = []
    handle = core.add_log_handler(lambda kind, msg: messages.append(msg))
    try:
        out = core.stvsr.Upsample(with_alpha)
    finally:
        core.remove_log_handler(handle)
    assert "_Alpha" not in out.get_frame(0).props and "_Alpha" not in out.get_frame(1).props
    from vs_plugin.filter import ALPHA_DROPPED
    assert [m for m in messages if "_Alpha" in m] == [ALPHA_DROPPED]
    kept = out.std.ClipToProp(core.stvsr.Upsample(with_alpha.std.PropToClip("_Alpha")), "_Alpha")
    a = kept.get_frame(1).props["_Alpha"]
    assert (a.width, a.height, a.format.color_family) == (320, 136, vs.GRAY)
