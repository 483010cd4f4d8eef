"""`stvsr upsample` as a user runs it: real video in and out, audio, errors that leave nothing behind."""
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from stvsr_core.cli import main
from stvsr_core.registry import DEFAULT_MODEL

from helpers import real_frames, write_video


def _short_clip(tmp_path, n=4, audio=False, size=(160, 68)):
    frames = [(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
              for f in real_frames(start=30, count=n, size=size)]
    path = tmp_path / "in.mp4"
    write_video(path, frames, fps=25, audio=audio)
    return path


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, (v.codec_context.width, v.codec_context.height), Fraction(v.average_rate), len(c.streams.audio)


def test_video_in_video_out_with_audio(tmp_path, untrained_file, capsys):
    src = _short_clip(tmp_path, n=4, audio=True)
    out = tmp_path / "out.mkv"
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file)]) == 0
    n, size, fps, audio = _probe(out)
    assert (n, size, fps, audio) == (7, (320, 136), Fraction(50), 1)
    assert "wrote 7 frames" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mkv"]  # no partial files left


def test_image_folder_to_png_folder(tmp_path, untrained_file):
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(real_frames(start=30, count=3, size=(96, 40))):
        Image.fromarray((f.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(src / f"f{i + 8}.png")
    out = tmp_path / "up"
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file), "--exact-double"]) == 0
    pngs = sorted(out.iterdir())
    assert len(pngs) == 6 and Image.open(pngs[0]).size == (192, 80)


def test_existing_output_needs_overwrite(tmp_path, untrained_file, capsys):
    src = _short_clip(tmp_path, n=2)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file), "--overwrite"]) == 0
    assert _probe(out)[0] == 3


def _error(capsys, args):
    code = main(["upsample", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_missing_input(tmp_path, capsys):
    code, msg = _error(capsys, [tmp_path / "nope.mp4", "-o", tmp_path / "o.mp4"])
    assert code == 2 and "no such file or folder" in msg and msg.startswith("stvsr upsample: error:")
    assert not (tmp_path / "o.mp4").exists()


def test_undecodable_input(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 1000)
    code, msg = _error(capsys, [bad, "-o", tmp_path / "o.mp4"])
    assert code == 2 and "broken.mp4: cannot open as a video" in msg
    assert list(tmp_path.iterdir()) == [bad]


def test_single_frame_input(tmp_path, untrained_file, capsys):
    src = _short_clip(tmp_path, n=1)
    code, msg = _error(capsys, [src, "-o", tmp_path / "o.mp4", "--model", untrained_file])
    assert code == 2 and "at least 2 frames" in msg
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    code, msg = _error(capsys, [folder, "-o", tmp_path / "o2", "--model", untrained_file])
    assert code == 2 and "at least 2 frames" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "one"]


def test_unsupported_pixel_format(tmp_path, capsys):
    folder = tmp_path / "deep"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(folder / f"{i}.png")
    code, msg = _error(capsys, [folder, "-o", tmp_path / "o"])
    assert code == 2 and "16-bit" in msg and "convert the frames to 8-bit RGB" in msg
    assert not (tmp_path / "o").exists()


def test_mixed_frame_sizes_leave_no_output(tmp_path, untrained_file, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "0.png")
    Image.new("RGB", (32, 32), "red").save(folder / "1.png")
    Image.new("RGB", (48, 32)).save(folder / "2.png")
    code, msg = _error(capsys, [folder, "-o", tmp_path / "o.mp4", "--model", untrained_file])
    assert code == 2 and "one size" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]


def test_unknown_model(tmp_path, capsys):
    src = _short_clip(tmp_path, n=2)
    code, msg = _error(capsys, [src, "-o", tmp_path / "o.mp4", "--model", "no-such-model"])
    assert code == 2 and "'no-such-model' is neither a shipped model" in msg


@pytest.mark.slow
def test_demo_command_with_default_model(tmp_path):
    """The README's main job on part of the bundled clip, as a subprocess (real exit code)."""
    clip = tmp_path / "demo.mp4"
    frames = [(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for f in real_frames(start=6, count=6)]
    write_video(clip, frames)  # 640x272, with the clip's first hard cut between frames 3 and 4
    out = tmp_path / "demo_2x.mp4"
    r = subprocess.run([sys.executable, "-m", "stvsr_core.cli", "upsample", str(clip), "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _probe(out)[:3] == (11, (1280, 544), Fraction(50))
    assert "1 scene cut(s)" in r.stderr and r.stdout == ""


def test_quality_model_from_the_command_line(tmp_path, monkeypatch, capsys):
    """--model stvsr-quality on a real clip; without its backbones: one line naming the fix, exit 2."""
    from helpers import require_backbones
    from stvsr_core.backbones import store
    if not all(store.installed(n) for n in ("spanx2_ch48", "rife-4.25")):
        require_backbones("stvsr-quality's backbones are not installed")
    src = _short_clip(tmp_path, n=3)
    out = tmp_path / "q.mp4"
    assert main(["upsample", str(src), "-o", str(out), "--model", "stvsr-quality"]) == 0
    assert _probe(out)[:3] == (5, (320, 136), Fraction(50))
    monkeypatch.setenv("STVSR_BACKBONES", str(tmp_path / "none"))
    capsys.readouterr()
    assert main(["upsample", str(src), "-o", str(tmp_path / "q2.mp4"), "--model", "stvsr-quality"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stvsr fetch-backbones" in err[0]
    assert not (tmp_path / "q2.mp4").exists()


# -- real files as phones, editors and broken downloads make them ---------------------------------

def _rgb(frames):
    return [(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for f in frames]


def _encode(path, frames, fps=25, pts=None, time_base=None, rotation=None, options=None):
    """Encode with PyAV: optional timestamps (variable rate) and display rotation (phone video)."""
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        if time_base is not None:
            s.codec_context.time_base = s.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if pts is not None:
                vf.pts, vf.time_base = pts[i], time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _decoded(path):
    """(frames as RGB arrays, their times in seconds, rotation of the first, container duration in s)."""
    with av.open(str(path)) as c:
        fs = list(c.decode(c.streams.video[0]))
        return ([f.to_ndarray(format="rgb24") for f in fs], [f.pts * f.time_base for f in fs],
                fs[0].rotation, c.duration / 1e6)


def _mae(a, b):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@pytest.mark.parametrize("output, kept", [("out.mp4", True), ("out.mkv", True), ("out.avi", False), ("pngs", False),
                                          ("old-pyav.mp4", False)])
def test_rotated_phone_video_stays_upright(tmp_path, untrained_file, monkeypatch, output, kept):
    """A display-matrix rotation is kept as the output's matrix, or applied to the frames where the
    output cannot hold one (PNGs, AVI, PyAV before 17.1): either way the picture is shown upright."""
    if output.startswith("old-pyav"):
        from stvsr_core import video_io
        monkeypatch.setattr(video_io, "KEEPS_ROTATION", set())
    upright = _rgb(real_frames(start=30, count=3, size=(96, 48)))
    src = _encode(tmp_path / "phone.mp4", [np.rot90(f, -1) for f in upright], rotation=90)  # stored sideways
    out = tmp_path / output
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file)]) == 0
    if out.is_dir():
        first, rotation = np.array(Image.open(sorted(out.iterdir())[0])), 0
    else:
        frames, _, rotation, _ = _decoded(out)
        first = frames[0]
    assert rotation == (90 if kept else 0)
    shown = np.rot90(first, rotation // 90)  # what a player displays
    ref = np.array(Image.fromarray(upright[0]).resize((192, 96), Image.BICUBIC))
    assert shown.shape == ref.shape
    assert _mae(shown, ref) < 30 < _mae(shown, ref[::-1, ::-1])  # upright, not upside down (~62)


def test_mirrored_video_to_pngs_is_refused(tmp_path, untrained_file, capsys):
    """A flip in the display matrix cannot be applied as a rotation: one line, nothing written."""
    src = tmp_path / "selfie.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 48, "yuv420p"
        s.set_display_rotation(90, hflip=True)
        for f in _rgb(real_frames(start=30, count=2, size=(96, 48))):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    code, msg = _error(capsys, [src, "-o", tmp_path / "pngs", "--model", untrained_file])
    assert code == 2 and "mirrors the picture" in msg and "write .mp4" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selfie.mp4"]


VFR_STEPS_MS = [33, 33, 67, 33, 17, 50, 33, 100, 33, 33, 200]  # a phone dropping and bunching frames


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_variable_frame_rate_keeps_timestamps(tmp_path, untrained_file, ext):
    """Each input frame keeps its time, each in-between frame sits at the midpoint of its pair,
    so the clip lasts as long as the input (and its audio stays in sync)."""
    pts = np.cumsum([0] + VFR_STEPS_MS).tolist()
    src = _encode(tmp_path / "vfr.mp4", _rgb(real_frames(start=30, count=len(pts), size=(96, 48))),
                  fps=30, pts=pts, time_base=Fraction(1, 1000))
    t_in = _decoded(src)[1]
    assert t_in == [Fraction(p, 1000) for p in pts]
    out = tmp_path / f"out{ext}"
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file)]) == 0
    t_out = _decoded(out)[1]
    want = [t for a, b in zip(t_in, t_in[1:]) for t in (a, (a + b) / 2)] + [t_in[-1]]
    assert len(t_out) == len(want)
    # the last frame at the input's last time (0.632 s; 0.457 s before), Matroska rounds to 1 ms
    assert max(abs(float(a - b)) for a, b in zip(t_out, want)) <= 0.001


@pytest.mark.parametrize("extra", [[], ["--exact-double"]])
def test_constant_rate_stays_exact(tmp_path, untrained_file, extra):
    """NTSC 30000/1001 in, exactly 60000/1001 out, every frame one output period apart."""
    src = _encode(tmp_path / "ntsc.mp4", _rgb(real_frames(start=30, count=5, size=(96, 48))), fps=Fraction(30000, 1001))
    out = tmp_path / "out.mp4"
    assert main(["upsample", str(src), "-o", str(out), "--model", str(untrained_file), *extra]) == 0
    t_out = _decoded(out)[1]
    assert len(t_out) == (10 if extra else 9)
    assert _probe(out)[2] == Fraction(60000, 1001)
    assert {b - a for a, b in zip(t_out, t_out[1:])} == {Fraction(1001, 60000)}


def test_variable_frame_rate_to_avi_is_refused(tmp_path, untrained_file, capsys):
    """AVI stores one frame rate: refuse variable-rate input with the fix instead of drifting."""
    pts = np.cumsum([0] + VFR_STEPS_MS).tolist()
    src = _encode(tmp_path / "vfr.mp4", _rgb(real_frames(start=30, count=len(pts), size=(96, 48))),
                  fps=30, pts=pts, time_base=Fraction(1, 1000))
    code, msg = _error(capsys, [src, "-o", tmp_path / "out.avi", "--model", untrained_file])
    assert code == 2 and "variable frame rate" in msg and ".mkv" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vfr.mp4"]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_truncated_input_keeps_what_was_decoded(tmp_path, untrained_file, capsys, ext):
    """A download cut at a quarter: a valid shorter output, one line saying how much, exit 3."""
    frames = _rgb(real_frames(start=0, count=59, size=(160, 68)))
    full = _encode(tmp_path / f"full{ext}", frames, options={"movflags": "faststart"} if ext == ".mp4" else None)
    src = tmp_path / f"cut{ext}"
    src.write_bytes(full.read_bytes()[: full.stat().st_size // 4])
    full.unlink()
    out = tmp_path / "out.mkv"
    code, msg = _error(capsys, [src, "-o", out, "--model", untrained_file])
    n = _probe(out)[0]
    assert code == 3 and 3 <= n < 59 and f"wrote {n} frames" in msg and "shorter" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name, "out.mkv"]


def test_trimmed_input_is_not_reported_as_truncated(tmp_path, untrained_file):
    """An edit list that hides frames (a stream copy cut mid-GOP) announces more frames than it shows."""
    import shutil
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    full = _encode(tmp_path / "full.mp4", _rgb(real_frames(start=0, count=30, size=(96, 48))))
    src = tmp_path / "trim.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "0.5", "-i", str(full), "-c", "copy", str(src)], check=True)
    assert main(["upsample", str(src), "-o", str(tmp_path / "out.mp4"), "--model", str(untrained_file)]) == 0


# -- OUTPUT is checked before any decoding or model loading -----------------------------------------
# ("no-such-model" below: the output's error must come first, before the model would be looked up)

@pytest.mark.parametrize("name", ["out.gif", "out.xyz", "out.ts"])
def test_unknown_output_extension_is_refused(tmp_path, capsys, name):
    src = _short_clip(tmp_path, n=2)
    code, msg = _error(capsys, [src, "-o", tmp_path / name, "--model", "no-such-model"])
    assert code == 2 and f"{name}: unknown output extension" in msg and ".mp4" in msg and "PNGs" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_existing_folder_with_a_dot_takes_pngs(tmp_path, untrained_file):
    src = _short_clip(tmp_path, n=2)
    (tmp_path / "frames.v2").mkdir()
    assert main(["upsample", str(src), "-o", str(tmp_path / "frames.v2"), "--model", str(untrained_file),
                 "--overwrite"]) == 0
    assert len(list((tmp_path / "frames.v2").glob("*.png"))) == 3


def _unwritable_folder(tmp_path):
    """A folder this process cannot create files in (root ignores permissions, not sysfs)."""
    import os
    import tempfile
    if os.geteuid() != 0:
        d = tmp_path / "read-only"
        d.mkdir(mode=0o555)
        return d
    try:
        tempfile.TemporaryFile(dir="/sys").close()
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder here")


def test_unwritable_output_folder_is_refused_up_front(tmp_path, capsys):
    src = _short_clip(tmp_path, n=2)
    folder = _unwritable_folder(tmp_path)
    for out in (folder / "out.mp4", folder / "pngs"):
        code, msg = _error(capsys, [src, "-o", out, "--model", "no-such-model"])
        assert code == 2 and "cannot write" in msg and "choose another output folder" in msg, msg


def test_missing_output_folder_is_refused_up_front(tmp_path, capsys):
    src = _short_clip(tmp_path, n=2)
    code, msg = _error(capsys, [src, "-o", tmp_path / "nope" / "out.mp4", "--model", "no-such-model"])
    assert code == 2 and "output folder does not exist" in msg


def test_overwrite_never_replaces_the_input(tmp_path, untrained_file, capsys):
    src = _short_clip(tmp_path, n=2)
    before = src.read_bytes()
    code, msg = _error(capsys, [src, "-o", src, "--overwrite", "--model", untrained_file])
    assert code == 2 and "is the input" in msg and src.read_bytes() == before
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "in.mp4").write_bytes(before)
    code, msg = _error(capsys, [folder / "in.mp4", "-o", folder, "--overwrite", "--model", untrained_file])
    assert code == 2 and "holds the input" in msg and (folder / "in.mp4").read_bytes() == before


def test_sigterm_leaves_no_partial_file(tmp_path, untrained_file):
    """A job scheduler's SIGTERM cleans up like Ctrl-C: no hidden partial file, non-zero exit."""
    import signal
    import time
    src = _short_clip(tmp_path, n=48, size=(320, 136))
    out = tmp_path / "out.mp4"
    partial = tmp_path / ".out.mp4.partial.mp4"
    p = subprocess.Popen([sys.executable, "-m", "stvsr_core.cli", "upsample", str(src), "-o", str(out),
                          "--model", str(untrained_file)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not partial.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert partial.exists(), "the run ended before it wrote anything: make the clip longer"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in.mp4"]
    assert p.returncode == 143 and "terminated" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("command, shown", [
    ("eval", [f"path (default: {DEFAULT_MODEL})", "(default: not written)"]),
    ("bench", [f"paths (default: {DEFAULT_MODEL})", "(default: auto)", "(default: 480x270 960x540)", "(default: 24)",
               "(default: 3)", "(default: torch)", "(default: none)"]),
])
def test_eval_and_bench_help_shows_defaults(capsys, command, shown):
    with pytest.raises(SystemExit):
        main([command, "-h"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, even at hyphens
    for s in shown:
        assert "".join(s.split()) in text


def test_audio_outlasting_the_video_is_not_truncation(tmp_path, untrained_file):
    """Matroska's per-stream DURATION, not the container's (here the audio's 3 s), ends the video."""
    src = tmp_path / "long_audio.mkv"
    write_video(src, _rgb(real_frames(start=30, count=10, size=(96, 48))), audio=True, audio_seconds=3)
    assert _decoded(src)[3] > 2.9
    assert main(["upsample", str(src), "-o", str(tmp_path / "out.mkv"), "--model", str(untrained_file)]) == 0


def test_overwrite_replaces_only_a_folder_of_frames(tmp_path, untrained_file, capsys):
    """--overwrite on a folder replaces earlier PNG output, never a folder of other files."""
    src = _short_clip(tmp_path, n=2)
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("precious")
    code, msg = _error(capsys, [src, "-o", work, "--overwrite", "--model", untrained_file])
    assert code == 2 and "holds more than PNG frames" in msg and (work / "notes.txt").read_text() == "precious"
    frames = tmp_path / "frames"
    assert main(["upsample", str(src), "-o", str(frames), "--model", str(untrained_file)]) == 0
    assert main(["upsample", str(src), "-o", str(frames), "--model", str(untrained_file), "--overwrite"]) == 0
    assert len(list(frames.iterdir())) == 3


def test_a_copy_forked_during_a_run_dies_on_sigterm():
    """A library's helper process forked while `stvsr upsample` holds SIGTERM (OpenVINO's
    telemetry) gets the default action back, so terminating it works even if it deadlocked."""
    import multiprocessing
    import signal
    from stvsr_core import cli_upsample

    def child():
        sys.exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
    previous = signal.signal(signal.SIGTERM, cli_upsample._terminate)
    try:
        p = multiprocessing.get_context("fork").Process(target=child)
        p.start()
        p.join(30)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert p.exitcode == 0
