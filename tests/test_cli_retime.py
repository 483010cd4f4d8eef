"""`stvsr upsample --factor / --fps / --no-upscale / --precision` on real clips: frame counts, timestamps,
durations and audio as ffmpeg and PyAV read them back, and the one-line refusals."""
import argparse
import math
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from stvsr_core import save_weights
from stvsr_core import cli_upsample
from stvsr_core.cli import main
from stvsr_core.engine import EngineOptions
from stvsr_core.registry import list_models

from helpers import DEMO, random_model, real_frames
from test_cli import VFR_STEPS_MS, _encode, _rgb

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
NTSC_IN, NTSC_OUT = Fraction(24000, 1001), Fraction(60000, 1001)


def _clip(path, rate, n, size=(160, 68), audio=False):
    """n frames of the bundled clip (real footage) re-timed to `rate` by ffmpeg, with a 440 Hz AAC tone
    as long as the video when `audio`."""
    rate = Fraction(rate)
    cmd = [FFMPEG, "-v", "error", "-i", str(DEMO)]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac",
                "-t", f"{float(n / rate):.6f}"]
    else:
        cmd += ["-frames:v", str(n)]
    cmd += ["-vf", f"scale={size[0]}:{size[1]},setpts=N/({rate}*TB)", "-r", str(rate), "-c:v", "libx264",
            "-crf", "12", str(path)]
    subprocess.run(cmd, check=True)
    assert len(_video(path)[0]) == n
    return path


def _video(path):
    """(frame times in s, (width, height), average rate, end of the stream in s) of the first video stream."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        end = v.duration * v.time_base if v.duration else _matroska_end(v)
        return [f.pts * f.time_base for f in frames], (frames[0].width, frames[0].height), v.average_rate, end


def _matroska_end(stream):
    h, m, s = stream.metadata["DURATION"].split(":")
    return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(s)


def _audio_span(path):
    """(first packet time, end of the last packet) of the audio stream, in s."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        packets = [p for p in c.demux(a) if p.pts is not None]
        return (min(p.pts for p in packets) * a.time_base,
                max(p.pts + p.duration for p in packets) * a.time_base)


def _upsample(capsys, *args):
    code = main(["upsample", *map(str, args)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if not line.startswith("upsample:")]  # tqdm's bar


@pytest.fixture(scope="module")
def clip25(tmp_path_factory):
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    return _clip(tmp_path_factory.mktemp("clips") / "bikes25.mp4", 25, 8)


@pytest.fixture(scope="module")
def model_x4(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "x4.safetensors"
    config = {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 16, "blocks": 1},
              "temporal": {"arch": "dis", "preset": "ultrafast", "high_res_flow": "upsample"},
              "fusion": {"preset": "lite"}, "refine": {"preset": "lite"}}
    save_weights(random_model(config), path, description="untrained 4x, for tests")
    return path


# -- --factor: counts, timestamps and durations exact ------------------------------------------------

@pytest.mark.parametrize("factor", ["3", "4", "5/2"])
@pytest.mark.parametrize("hold", [False, True])
def test_factor_counts_times_and_durations_are_exact(tmp_path, clip25, untrained_file, capsys, factor, hold):
    """8 frames at 25 fps: floor(7 f) + 1 frames (ceil(8 f) with --exact-double, lasting the input's 0.32 s),
    frame j at exactly j / (25 f), and the start and final lines say so."""
    f = Fraction(factor)
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", untrained_file, "--factor", factor,
                            *(["--exact-double"] if hold else []))
    assert code == 0, lines
    n = math.ceil(8 * f) if hold else math.floor(7 * f) + 1
    times, size, rate, end = _video(out)
    fps = 25 * f
    assert (len(times), size, rate) == (n, (320, 136), fps)
    assert times == [j / fps for j in range(n)]
    assert end == n / fps and (end == Fraction(8, 25)) == hold
    shown = f"{float(fps):g}" if fps.denominator == 1 else f"{float(fps):.3f} ({fps})"
    assert f"(320x136, {n} frames, {float(n / fps):.3f} s at {shown} fps, x{f} frame rate)" in lines[0]
    assert f"wrote {n} frames ({float(n / fps):.3f} s at {shown} fps)" in lines[-1]


def test_fps_60_from_25(tmp_path, clip25, untrained_file, capsys, caplog):
    """--fps 60 on 25 fps: factor 12/5, frame j at j/60 up to the last input frame (0.28 s), and --fps
    wins over a --factor given with it (one warning line says so)."""
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", untrained_file, "--fps", "60", "--factor", "3")
    assert code == 0, lines
    times, size, rate, end = _video(out)
    assert (len(times), size, rate) == (17, (320, 136), 60)
    assert times == [Fraction(j, 60) for j in range(17)] and times[-1] <= Fraction(7, 25)
    assert end == Fraction(17, 60)
    assert "--factor 3 ignored: --fps 60 sets the output rate" in caplog.text
    assert "(320x136, 17 frames, 0.283 s at 60 fps, x12/5 frame rate)" in lines[0]
    assert "wrote 17 frames (0.283 s at 60 fps)" in lines[-1]


@needs_ffmpeg
@pytest.mark.parametrize("ext, fps, hold", [(".mp4", "60000/1001", True), (".mp4", "60000/1001", False),
                                            (".mkv", "59.94", True)])
def test_ntsc_film_to_ntsc_60_keeps_audio_in_sync(tmp_path, untrained_file, capsys, ext, fps, hold):
    """24000/1001 -> 60000/1001 (5/2) with AAC audio: frame j within half a frame of j*1001/60000 (exact
    in MP4; Matroska stores ms), the audio copied at its own times (same offset to the first video
    frame as in the input), and with --exact-double the audio ends within a frame of the video."""
    src = _clip(tmp_path / "film.mp4", NTSC_IN, 12, audio=True)
    a_in = _audio_span(src)
    assert abs(a_in[1] - 12 / NTSC_IN) < 1 / NTSC_IN  # the input's tone lasts as long as its video
    out = tmp_path / f"out{ext}"
    code, lines = _upsample(capsys, src, "-o", out, "--model", untrained_file, "--fps", fps,
                            *(["--exact-double"] if hold else []))
    assert code == 0, lines
    n = 30 if hold else 28  # ceil(12 * 5/2), floor(11 * 5/2) + 1
    assert f"{n} frames" in lines[0] and "59.940 (60000/1001) fps, x5/2 frame rate" in lines[0]
    times, size, rate, end = _video(out)
    period = 1 / NTSC_OUT
    assert len(times) == n and size == (320, 136)
    err = max(abs(t - j * period) for j, t in enumerate(times))
    assert err == 0 if ext == ".mp4" else err <= Fraction(1, 2000)  # Matroska rounds to 1 ms
    if ext == ".mp4":
        assert rate == NTSC_OUT and end == n * period
    a_out = _audio_span(out)
    assert abs((a_out[0] - times[0]) - (a_in[0] - _video(src)[0][0])) <= Fraction(1, 1000)
    if hold:
        assert abs(end - 12 / NTSC_IN) <= Fraction(1, 1000)  # the video lasts as long as the input
        assert abs(a_out[1] - end) < period  # and the audio ends with it


# -- spatial-only, temporal-only --------------------------------------------------------------------

def test_factor_1_is_spatial_only(tmp_path, clip25, untrained_file, capsys):
    """--factor 1: every input frame once, at twice the size and the input's times; a single frame works."""
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", untrained_file, "--factor", "1")
    assert code == 0, lines
    times, size, rate, _ = _video(out)
    assert (times, size, rate) == (_video(clip25)[0], (320, 136), 25)
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(_rgb(real_frames(start=30, count=1, size=(96, 40)))[0]).save(folder / "a.png")
    code, lines = _upsample(capsys, folder, "-o", tmp_path / "one_up", "--model", untrained_file, "--factor", "1")
    assert code == 0, lines
    assert [Image.open(p).size for p in (tmp_path / "one_up").iterdir()] == [(192, 80)]


def test_no_upscale_is_temporal_only(tmp_path, clip25, untrained_file, capsys):
    """--no-upscale --factor 3: 22 frames at the input's 160x68 and 75 fps; the source frames come through."""
    out = tmp_path / "pngs"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", untrained_file, "--factor", "3", "--no-upscale")
    assert code == 0, lines
    assert "(160x68, 22 frames, 0.293 s at 75 fps, x3 frame rate)" in lines[0]
    pngs = sorted(out.iterdir())
    assert len(pngs) == 22 and {Image.open(p).size for p in pngs} == {(160, 68)}
    with av.open(str(clip25)) as c:
        source = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for j in (0, 3, 21):  # output 3k is input frame k, untouched
        assert np.array_equal(np.array(Image.open(pngs[j])), source[j // 3])
    middle = np.array(Image.open(pngs[1])).astype(np.float32)
    assert np.abs(middle - source[0]).mean() > 0.1  # an in-between frame, not a copy


# -- variable frame rate ----------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate_factor_3_keeps_its_length(tmp_path, untrained_file, capsys, ext):
    """A phone's dropped and bunched frames at --factor 3: each input frame keeps its time, two frames
    at 1/3 and 2/3 of each interval, the last at the input's last time (MP4 exact, Matroska 1 ms)."""
    pts = np.cumsum([0] + VFR_STEPS_MS).tolist()
    src = _encode(tmp_path / "vfr.mp4", _rgb(real_frames(start=30, count=len(pts), size=(96, 48))),
                  fps=30, pts=pts, time_base=Fraction(1, 1000))
    t_in = _video(src)[0]
    out = tmp_path / f"out{ext}"
    code, lines = _upsample(capsys, src, "-o", out, "--model", untrained_file, "--factor", "3")
    assert code == 0, lines
    want = [a + i * (b - a) / 3 for a, b in zip(t_in, t_in[1:]) for i in range(3)] + [t_in[-1]]
    t_out = _video(out)[0]
    assert len(t_out) == len(want) == 3 * len(t_in) - 2
    err = max(abs(a - b) for a, b in zip(t_out, want))
    assert err == 0 if ext == ".mp4" else err <= Fraction(1, 2000)
    assert t_out[-1] == t_in[-1] == Fraction(632, 1000)


def test_variable_frame_rate_to_a_target_fps(tmp_path, untrained_file, capsys):
    """--fps 60 on variable-rate input: frame j at j/60 on the input's clock, up to its last frame."""
    pts = np.cumsum([0] + VFR_STEPS_MS).tolist()
    src = _encode(tmp_path / "vfr.mp4", _rgb(real_frames(start=30, count=len(pts), size=(96, 48))),
                  fps=30, pts=pts, time_base=Fraction(1, 1000))
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, src, "-o", out, "--model", untrained_file, "--fps", "60")
    assert code == 0, lines
    t_out = _video(out)[0]
    assert t_out == [Fraction(j, 60) for j in range(38)]  # 0.632 s * 60 = 37.9
    assert "(192x96, about 28 frames" in lines[0]  # from the average rate: the timestamps decide
    assert "wrote 38 frames (0.633 s at 60 fps)" in lines[-1]


# -- a 4x model ---------------------------------------------------------------------------------------

def test_4x_model_end_to_end(tmp_path, clip25, model_x4, capsys):
    """A 4x model file with --factor 4: 4x the width and height (read from the model), 4x the rate."""
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", model_x4, "--factor", "4")
    assert code == 0, lines
    times, size, rate, end = _video(out)
    assert (len(times), size, rate, end) == (29, (640, 272), 100, Fraction(29, 100))
    assert "(640x272, 29 frames, 0.290 s at 100 fps, x4 frame rate)" in lines[0]


def test_shipped_4x_model(tmp_path, clip25, capsys):
    if "stvsr-fast-x4" not in list_models():
        pytest.skip("stvsr-fast-x4 is not shipped in this install yet")
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, clip25, "-o", out, "--model", "stvsr-fast-x4", "--factor", "4")
    assert code == 0, lines
    assert _video(out)[:3] == ([Fraction(j, 100) for j in range(29)], (640, 272), 100)


# -- image folders: --input-fps ----------------------------------------------------------------------

def _folder(tmp_path, n=4):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_rgb(real_frames(start=30, count=n, size=(96, 40)))):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    return folder


def test_fps_on_a_folder_needs_its_rate(tmp_path, untrained_file, capsys):
    """A folder has no rate: --fps (the output rate) without --input-fps is refused, in one line that
    also tells users of the old --fps (the folder's rate) where it went; with it, 4 frames at 24 -> 60 is 8."""
    folder = _folder(tmp_path)
    code, lines = _upsample(capsys, folder, "-o", tmp_path / "up.mp4", "--model", untrained_file, "--fps", "60")
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("stvsr upsample: error:") and "states no frame rate" in lines[0]
    assert "--input-fps" in lines[0] and not (tmp_path / "up.mp4").exists()
    out = tmp_path / "up.mp4"
    code, lines = _upsample(capsys, folder, "-o", out, "--model", untrained_file, "--fps", "60",
                            "--input-fps", "24")
    assert code == 0, lines
    assert _video(out)[:3] == ([Fraction(j, 60) for j in range(8)], (192, 80), 60)


def test_input_fps_sets_a_folders_rate_and_not_a_videos(tmp_path, clip25, untrained_file, capsys, caplog):
    folder = _folder(tmp_path, n=3)
    out = tmp_path / "up.mp4"
    code, lines = _upsample(capsys, folder, "-o", out, "--model", untrained_file, "--input-fps", "23.976")
    assert code == 0, lines
    assert _video(out)[2] == Fraction(48000, 1001) and "23.976 (24000/1001) fps" in lines[0]
    code, lines = _upsample(capsys, clip25, "-o", tmp_path / "v.mp4", "--model", untrained_file,
                            "--input-fps", "30")
    assert code == 0 and "--input-fps 30 ignored" in caplog.text and _video(tmp_path / "v.mp4")[2] == 50


# -- refusals: one line, exit 2, nothing written ------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--factor", "0"], "--factor must be positive"),
    (["--factor", "-2"], "--factor must be positive"),
    (["--factor", "abc"], "--factor must be a positive number or NUM/DEN, got 'abc'"),
    (["--fps", "abc"], "--fps must be a positive number or NUM/DEN, got 'abc'"),
    (["--fps", "0"], "--fps must be positive"),
    (["--fps", "60/0"], "--fps must be a positive number or NUM/DEN"),
    (["--input-fps", "x"], "--input-fps must be a positive number"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, clip25, capsys, args, says):
    """Checked before the output, the input and the model (no-such-model is never looked up)."""
    code, lines = _upsample(capsys, clip25, "-o", tmp_path / "o.mp4", "--model", "no-such-model", *args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stvsr upsample: error:")
    assert says in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, says", [
    (["--no-upscale", "--factor", "1"], "leaves nothing to do"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 needs a CUDA device"),
    (["--precision", "fp32", "--bf16"], "disagrees with the deprecated --fp16/--bf16 flag (bf16)"),
])
def test_impossible_settings_are_refused(tmp_path, clip25, untrained_file, capsys, args, says):
    code, lines = _upsample(capsys, clip25, "-o", tmp_path / "o.mp4", "--model", untrained_file, *args)
    assert code == 2 and len(lines) == 1 and says in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_precision_is_one_enum(capsys):
    with pytest.raises(SystemExit) as e:
        main(["upsample", "-o", "x.mp4", "--precision", "half"])
    assert e.value.code == 2 and "invalid choice: 'half'" in capsys.readouterr().err


def test_deprecated_precision_flags_still_work(tmp_path, clip25, untrained_file, capsys, caplog):
    code, lines = _upsample(capsys, clip25, "-o", tmp_path / "o.mp4", "--model", untrained_file, "--no-bf16")
    assert code == 0 and "deprecated: use --precision fp32" in caplog.text and "on cpu, fp32" in lines[0]


# -- defaults -------------------------------------------------------------------------------------------

def _parse(*argv):
    parser = argparse.ArgumentParser()
    cli_upsample.add_parser(parser.add_subparsers())
    return parser.parse_args(["upsample", "-o", "x.mp4", *argv])


def test_defaults_come_from_engine_options(monkeypatch):
    """Every default of the command is EngineOptions()'s: change those and the command follows."""
    args = _parse()
    d = EngineOptions()
    for name in ("tile", "tile_pad", "scene_threshold", "exact_double", "upscale", "workers", "threads", "backend"):
        assert getattr(args, name) == getattr(d, name), name
    assert cli_upsample._retime(args) == (d.factor, None, None) and cli_upsample._precision(args) == d.precision
    other = EngineOptions(tile=96, tile_pad=8, scene_threshold=0.3, factor=3, upscale=False, precision="fp32",
                          workers=2, threads=3, exact_double=True)
    monkeypatch.setattr(cli_upsample, "_DEFAULTS", other)
    args = _parse()
    for name in ("tile", "tile_pad", "scene_threshold", "exact_double", "upscale", "workers", "threads"):
        assert getattr(args, name) == getattr(other, name), name
    assert cli_upsample._retime(args)[0] == 3 and cli_upsample._precision(args) == "fp32"


def test_help_shows_the_new_options_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["upsample", "-h"])
    text = "".join(capsys.readouterr().out.split())
    for s in ["--factorN[/D]", "(default: 2)", "--fpsNUM[/DEN]", "--input-fpsNUM[/DEN]", "(default: 25;",
              "--no-upscale", "{auto,fp32,bf16,fp16}", "(default: auto:", "default: 0.15)", "(default: 32)"]:
        assert "".join(s.split()) in text, s
    assert "--fp16" not in text and "--bf16" not in text  # deprecated, hidden


@pytest.mark.parametrize("text, value", [("60", Fraction(60)), ("60000/1001", Fraction(60000, 1001)),
                                         ("59.94", Fraction(60000, 1001)), ("23.976", Fraction(24000, 1001)),
                                         ("23.98", Fraction(24000, 1001)), ("29.97", Fraction(30000, 1001)),
                                         ("2997/100", Fraction(2997, 100)), ("30.0", Fraction(30)),
                                         ("12.5", Fraction(25, 2)), ("119.88", Fraction(120000, 1001))])
def test_rates_read_as_players_show_them(text, value):
    assert cli_upsample._number(text, "--fps") == value
    assert cli_upsample._number("2.5", "--factor") == Fraction(5, 2)


# -- the bundled clip, default model (the README's examples) ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("args, n, fps, size", [(["--factor", "4"], 253, 100, (1280, 544)),
                                                (["--fps", "60", "--no-upscale"], 152, 60, (640, 272))])
def test_bundled_clip(tmp_path, capsys, args, n, fps, size):
    """64 frames at 25 fps, two hard cuts: x4 is 63 * 4 + 1 frames, 60 fps is floor(63 * 12/5) + 1."""
    out = tmp_path / "out.mp4"
    code, lines = _upsample(capsys, DEMO, "-o", out, *args)
    assert code == 0, lines
    times, got_size, rate, end = _video(out)
    assert (len(times), got_size, rate, end) == (n, size, fps, Fraction(n, fps))
    assert times == [Fraction(j, fps) for j in range(n)]
    assert f"wrote {n} frames" in lines[-1] and "2 scene cut(s)" in lines[-1]
