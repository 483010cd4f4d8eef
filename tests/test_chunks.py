"""Chunked `stvsr upsample` on one machine: the plan (scene cuts, one-frame overlap, every slot once),
lossless chunks, the same frames as the single streaming run, batches, resume, errors."""
import json
import re
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from stvsr_core import chunks
from stvsr_core.cli import main
from stvsr_core.timeline import Retime, Timeline

from helpers import real_frames, write_video

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def make_clip(path, start=6, count=14, size=(96, 64), fps=25, audio=False, gop=5, title=None):
    """Real footage (the demo clip from frame 6: a hard cut between frames 3 and 4), a short GOP so
    chunks seek to keyframes inside the clip."""
    frames = [(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
              for f in real_frames(start=start, count=count, size=size)]
    gops = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    write_video(path, frames, fps, audio, options=gops, title=title)
    return path


def pngs(folder):
    return [np.array(Image.open(p)) for p in sorted(Path(folder).iterdir())]


def decoded(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        fs = list(c.decode(v))
        return ([f.to_ndarray(format="rgb24") for f in fs], [f.pts * f.time_base for f in fs],
                Fraction(v.average_rate), len(c.streams.audio), dict(c.metadata))


def lossy_close(a, b, mae=8.0):
    """Frames equal within codec noise. libx264 here is not reproducible between two processes of the
    same single run, fed hash-identical frames: on the untrained model's noise-like 192x128 frames
    at crf 17, a mean absolute difference of 1.5-4.4 levels (exact frames: the PNG tests)."""
    return len(a) == len(b) and all(float(np.abs(x.astype(np.float32) - y).mean()) < mae for x, y in zip(a, b))


def upsample(*args):
    return main(["upsample", *map(str, args)])


# -- the plan ----------------------------------------------------------------------------------

@pytest.mark.parametrize("retime", [Retime(2), Retime(3), Retime(Fraction(5, 2)), Retime(1),
                                    Retime(2, exact_double=True), Retime(Fraction(7, 3), exact_double=True),
                                    Retime(fps=Fraction(60000, 1001))])
def test_every_output_frame_belongs_to_exactly_one_chunk(retime):
    """Chunks own the timeline's slots whose k lies in [first, last), plus k == last where they do
    not overlap the next; over many clip lengths, cut patterns and chunk sizes the chunks' slots are
    the clip's slots, in order, each once."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 17, 40):
        tl = Timeline(retime, Fraction(24000, 1001))
        slots = [tl.slot(j, n) for j in range(tl.count(n))]
        for k_max in (2, 3, 4, 7, 50):
            cuts = sorted(set(rng.integers(0, n - 1, size=n // 4).tolist()))
            spans = chunks.split(n, cuts, k_max)
            assert spans[0].first == 0 and spans[-1].last == n - 1 and not spans[-1].overlap
            for a, b in zip(spans, spans[1:]):
                assert b.first == (a.last if a.overlap else a.last + 1)  # one frame of overlap, or a cut
                assert a.overlap or a.last in cuts
                assert a.last - a.first + 1 <= k_max
            ranges = chunks.assign(slots, spans)
            assert ranges[0][0] == 0 and ranges[-1][1] == len(slots)
            assert all(r[1] == s[0] for r, s in zip(ranges, ranges[1:]))
            for span, (j0, j1) in zip(spans, ranges):
                assert all(chunks.owns(span, s.k) for s in slots[j0:j1])


def test_chunks_end_at_cuts_in_their_second_half_else_overlap():
    spans = chunks.split(30, [3, 12, 13, 25], 10)
    assert [(s.first, s.last, s.overlap) for s in spans] == [(0, 9, True), (9, 13, False), (14, 23, True),
                                                            (23, 29, False)]


def test_seeking_is_frame_accurate(tmp_path):
    """Frames first..last by a keyframe seek (timestamps) or by counting from the start: each the
    sequentially decoded frames; a plan whose timestamps do not match the file is refused."""
    clip = make_clip(tmp_path / "in.mp4", count=17, gop=4)
    with av.open(str(clip)) as c:
        fs = list(c.decode(video=0))
    every = [f.to_ndarray(format="rgb24") for f in fs]
    pts = [f.pts for f in fs]
    for first, last in [(0, 3), (3, 9), (5, 5), (8, 16), (13, 16)]:
        for plan_pts in (pts[first:last + 1], [None] * (last - first + 1)):
            got = list(chunks.source_frames(clip, first, last, plan_pts))
            assert len(got) == last - first + 1 and all(np.array_equal(a, b) for a, b in zip(got, every[first:]))
    with pytest.raises(chunks.ChunkError, match="the plan says"):
        list(chunks.source_frames(clip, 4, 8, [p + 1 if i == 2 else p for i, p in enumerate(pts[4:9])]))


def test_lossless_chunks_are_exact(tmp_path):
    """FFV1 intermediates give back exactly the uint8 frames written (random noise, the worst case)."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (34, 50, 3), dtype=np.uint8) for _ in range(5)]
    w = chunks.LosslessWriter(tmp_path / "c.mkv")
    for f in frames:
        w.write(f)
    info = w.commit()
    assert info["frames"] == 5 and info["sha256"] == chunks.sha256(tmp_path / "c.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.mkv"]
    back = list(chunks.read_lossless(tmp_path / "c.mkv"))
    assert len(back) == 5 and all(np.array_equal(a, b) for a, b in zip(frames, back))


# -- the same frames as the single run -----------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["--exact-double"]])
def test_chunked_frames_equal_the_single_run(tmp_path, untrained_file, capsys, extra):
    """Chunks of 4 frames over a real clip with a scene cut, seeking to mid-clip keyframes: the
    concatenation is exactly the single streaming run's frames, the cut's frames included."""
    clip = make_clip(tmp_path / "in.mp4", count=14)
    assert upsample(clip, "-o", tmp_path / "single", "--model", untrained_file, *extra) == 0
    capsys.readouterr()
    assert upsample(clip, "-o", tmp_path / "chunked", "--model", untrained_file, "--chunk-frames", 4, *extra) == 0
    err = capsys.readouterr().err
    assert "1 scene cut(s)" in err and "in 4 chunk(s)" in err
    single, chunked = pngs(tmp_path / "single"), pngs(tmp_path / "chunked")
    assert len(single) == len(chunked) == (28 if extra else 27)
    for i, (a, b) in enumerate(zip(single, chunked)):
        assert np.array_equal(a, b), f"output frame {i} differs"
    # the cut between source frames 3 and 4 ends chunk 0 (no overlap): its in-between frame repeats frame 3
    assert np.array_equal(chunked[7], chunked[6]) and not np.array_equal(chunked[8], chunked[7])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunked", "in.mp4", "single"]  # work folder gone


@pytest.mark.parametrize("retime", [["--factor", "3"], ["--factor", "5/2"], ["--fps", "60"], ["--factor", "1"],
                                    ["--no-upscale", "--factor", "4"], ["--factor", "7/3", "--exact-double"]])
def test_chunked_frames_equal_the_single_run_at_any_rate(tmp_path, untrained_file, retime):
    """Any factor, an fps target, spatial-only and temporal-only: the chunks own the one timeline's
    slots, so the concatenation is the single run's frames (and count) exactly."""
    clip = make_clip(tmp_path / "in.mp4", count=11)
    assert upsample(clip, "-o", tmp_path / "single", "--model", untrained_file, *retime) == 0
    assert upsample(clip, "-o", tmp_path / "chunked", "--model", untrained_file, "--chunk-frames", 3, *retime) == 0
    single, chunked = pngs(tmp_path / "single"), pngs(tmp_path / "chunked")
    assert len(single) == len(chunked) > 10
    assert all(np.array_equal(a, b) for a, b in zip(single, chunked))


def test_chunked_4x_model_equals_the_single_run(tmp_path):
    """Any model scale: the shipped 4x model (stvsr-fast-x4) chunked at --factor 3."""
    from stvsr_core import list_models
    if "stvsr-fast-x4" not in list_models():
        pytest.skip("stvsr-fast-x4 is not shipped in this install")
    clip = make_clip(tmp_path / "in.mp4", count=7, size=(64, 48))
    args = ["--model", "stvsr-fast-x4", "--factor", "3", "--precision", "fp32"]
    assert upsample(clip, "-o", tmp_path / "single", *args) == 0
    assert upsample(clip, "-o", tmp_path / "chunked", "--chunk-frames", 3, *args) == 0
    single, chunked = pngs(tmp_path / "single"), pngs(tmp_path / "chunked")
    assert len(single) == len(chunked) == 19 and single[0].shape == (192, 256, 3)
    assert all(np.array_equal(a, b) for a, b in zip(single, chunked))


def test_scene_cut_chunk_boundary(tmp_path, untrained_file):
    """The plan splits at the one cut measure's cut, and only there without overlap."""
    from stvsr_core import Engine, load_model
    from stvsr_core.video_io import read_frames
    clip = make_clip(tmp_path / "in.mp4", count=14)
    engine = Engine(load_model(untrained_file), "cpu")
    plan = chunks.scan(read_frames(clip), engine, 25, chunk_frames=4)
    assert plan.cuts == [3]
    assert [(c.first, c.last, c.overlap, c.cut_after) for c in plan.chunks] == [
        (0, 3, False, True), (4, 7, True, False), (7, 10, True, False), (10, 13, False, False)]
    assert [(c.j0, c.j1) for c in plan.chunks] == [(0, 8), (8, 14), (14, 20), (20, 27)]


def test_chunked_variable_rate_rotated_and_image_folder_inputs(tmp_path, untrained_file):
    """A phone's variable-rate, rotated video (seeks by its own timestamps, rotation applied for
    PNGs) and a folder of images: chunked, the single run's frames exactly; in Matroska the single
    run's timestamps."""
    from test_cli import VFR_STEPS_MS, _encode, _rgb
    pts = np.cumsum([0] + VFR_STEPS_MS).tolist()
    frames = _rgb(real_frames(start=6, count=len(pts), size=(96, 48)))
    vfr = _encode(tmp_path / "vfr.mp4", [np.rot90(f, -1) for f in frames], fps=30, pts=pts,
                  time_base=Fraction(1, 1000), rotation=90, options=None)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i}.png")
    for src in (vfr, folder):
        for out in ("single", "chunked"):
            extra = ["--chunk-frames", 3] if out == "chunked" else []
            assert upsample(src, "-o", tmp_path / f"{src.stem}_{out}", "--model", untrained_file, *extra) == 0
        a, b = pngs(tmp_path / f"{src.stem}_single"), pngs(tmp_path / f"{src.stem}_chunked")
        assert len(a) == len(b) == 23 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert upsample(vfr, "-o", tmp_path / "single.mkv", "--model", untrained_file) == 0
    assert upsample(vfr, "-o", tmp_path / "chunked.mkv", "--model", untrained_file, "--chunk-frames", 3) == 0
    assert decoded(tmp_path / "single.mkv")[1] == decoded(tmp_path / "chunked.mkv")[1]


def test_chunked_video_keeps_timestamps_audio_and_frames(tmp_path, untrained_file):
    """A lossy output (mp4 with audio): the same frame count and timestamps as the single run, the
    audio kept, the frames equal (the encoder gets the same frames)."""
    clip = make_clip(tmp_path / "in.mp4", count=10, audio=True)
    assert upsample(clip, "-o", tmp_path / "single.mp4", "--model", untrained_file) == 0
    assert upsample(clip, "-o", tmp_path / "chunked.mp4", "--model", untrained_file, "--chunk-frames", 3) == 0
    f1, t1, fps1, a1, _ = decoded(tmp_path / "single.mp4")
    f2, t2, fps2, a2, _ = decoded(tmp_path / "chunked.mp4")
    assert (len(f2), t2, fps2, a2) == (19, t1, fps1, a1) and a1 == 1
    assert lossy_close(f1, f2)


def test_folder_of_clips_becomes_folder_of_outputs(tmp_path, untrained_file, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mp4", count=5, audio=True, title="first clip")
    make_clip(clips / "b.mkv", start=20, count=4, fps=30)
    make_clip(clips / "c.ts", start=40, count=3)
    out = tmp_path / "out"
    assert upsample(clips, "-o", out, "--model", untrained_file) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mkv", "c.mkv"]  # .ts: written as .mkv
    fa, _, fps_a, audio_a, meta_a = decoded(out / "a.mp4")
    fb, _, fps_b, audio_b, _ = decoded(out / "b.mkv")
    assert (len(fa), fps_a, audio_a, meta_a.get("title")) == (9, 50, 1, "first clip")
    assert (len(fb), fps_b, audio_b, fb[0].shape) == (7, 60, 0, (128, 192, 3))
    assert len(decoded(out / "c.mkv")[0]) == 5
    assert "wrote 21 frames of 3 clip(s)" in capsys.readouterr().err
    # a glob does the same
    assert upsample(str(clips / "*.mp4"), "-o", tmp_path / "out2", "--model", untrained_file) == 0
    assert [p.name for p in (tmp_path / "out2").iterdir()] == ["a.mp4"]


# -- resume ------------------------------------------------------------------------------------

def interrupt_after_stitching(monkeypatch, after=0):
    """Ctrl-C once an output is renamed into place, before its manifest records it (the chunks stay)."""
    done = chunks.Manifest.mark_done
    calls = []

    def mark_done(self, output, frames):
        calls.append(output)
        if len(calls) > after:
            raise KeyboardInterrupt
        return done(self, output, frames)
    monkeypatch.setattr(chunks.Manifest, "mark_done", mark_done)


def _manifest(work):
    try:
        return json.loads((work / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def test_killed_command_resumes_with_only_the_unfinished_chunks(tmp_path, untrained_file, capsys):
    """SIGKILL mid-run (no clean-up at all), then the same command: the chunks the manifest
    verified are skipped, the others rendered, and the output is the single run's."""
    clip = make_clip(tmp_path / "in.mp4", count=40, gop=4)
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = ["upsample", str(clip), "-o", str(out), "--model", str(untrained_file), "--chunk-frames", "2",
           "--work", str(work), "--precision", "bf16"]  # a precision named: auto is measured in each process
    p = subprocess.Popen([sys.executable, "-m", "stvsr_core.cli", *cmd], env=ENV, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        m = _manifest(work / "out")  # --work holds a folder per output
        if m and len(m["chunks"]) >= 3:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == -signal.SIGKILL, f"the run ended before it was killed: make the clip longer\n{err[-3000:]}"
    done = sorted(int(k) for k in _manifest(work / "out")["chunks"])
    assert not out.exists()
    capsys.readouterr()
    assert main(cmd) == 0
    err = capsys.readouterr().err
    n = int(re.search(r"in (\d+) chunk\(s\)", err).group(1))
    assert 3 <= len(done) < n, "the run ended before it was killed: make the clip longer"
    rendering = [i for i in range(n) if i not in done]
    assert f"skipped {', '.join(map(str, done))} (finished before, verified), rendering " \
           f"{', '.join(map(str, rendering))}" in err
    assert f"{len(rendering)} chunk(s) rendered, {len(done)} skipped" in err
    assert upsample(clip, "-o", tmp_path / "single", "--model", untrained_file, "--precision", "bf16") == 0
    assert all(np.array_equal(a, b) for a, b in zip(pngs(tmp_path / "single"), pngs(out)))
    assert len(pngs(out)) == 79 and list(work.iterdir()) == []


def test_a_batch_resumes_past_its_finished_outputs(tmp_path, untrained_file, capsys, monkeypatch):
    """Interrupted after the second clip's output was renamed into place but before its manifest
    said so: the rerun skips the first (its output verified against the manifest) and stitches
    the second again from its finished chunks, rendering nothing."""
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mp4", count=5)
    make_clip(clips / "b.mp4", start=30, count=5)
    interrupt_after_stitching(monkeypatch, after=1)
    out = tmp_path / "out"
    assert upsample(clips, "-o", out, "--model", untrained_file, "--chunk-frames", 3) == 130
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.mp4", "b.mp4"]
    monkeypatch.undo()
    capsys.readouterr()
    assert upsample(clips, "-o", out, "--model", untrained_file, "--chunk-frames", 3) == 0
    err = capsys.readouterr().err
    assert f"{clips / 'a.mp4'}: done before ({out / 'a.mp4'}, 9 frames): skipped" in err
    assert "rendering none" in err and "0 chunk(s) rendered" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]


def test_stopped_between_the_stitch_and_the_manifest(tmp_path, untrained_file, capsys, monkeypatch):
    """The output renamed into place, then the command killed before the manifest recorded it:
    the rerun knows the output is this job's (the stitch had begun) and writes it again."""
    from stvsr_core import chunks as chunks_module
    clip = make_clip(tmp_path / "in.mp4", count=6)
    monkeypatch.setattr(chunks_module.Manifest, "mark_done", lambda self, out, n: (_ for _ in ()).throw(
        KeyboardInterrupt))
    cmd = [clip, "-o", tmp_path / "out.mkv", "--model", untrained_file, "--chunk-frames", 3]
    assert upsample(*cmd) == 130 and (tmp_path / "out.mkv").exists()
    monkeypatch.undo()
    assert upsample(*cmd) == 0
    assert "rendering none" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mkv"]


def test_a_damaged_chunk_is_rendered_again(tmp_path, untrained_file, capsys, monkeypatch):
    """A chunk file whose checksum no longer matches the manifest is not taken as done."""
    clip = make_clip(tmp_path / "in.mp4", count=8)
    work = tmp_path / "work"
    interrupt_after_stitching(monkeypatch)
    cmd = [clip, "-o", tmp_path / "out", "--model", untrained_file, "--chunk-frames", 3, "--work", work]
    assert upsample(*cmd) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    chunk1 = work / "out" / "chunk_00001.mkv"
    data = bytearray(chunk1.read_bytes())
    data[-100] ^= 0xFF
    chunk1.write_bytes(bytes(data))
    monkeypatch.undo()
    assert upsample(*cmd) == 0
    assert "skipped 0, 2, 3 (finished before, verified), rendering 1" in capsys.readouterr().err


def test_a_resumed_job_keeps_its_precision(tmp_path, untrained_file, capsys, monkeypatch):
    """precision auto is resolved once a job (on a CPU: measured, so it can change under load) and
    kept in the manifest: a resume renders at the precision the finished chunks were made at."""
    from stvsr_core import precision
    clip = make_clip(tmp_path / "in.mp4", count=6)
    work = tmp_path / "work"
    interrupt_after_stitching(monkeypatch)
    monkeypatch.setattr(precision, "cpu_prefers_bf16", lambda: True)
    monkeypatch.setattr("stvsr_core.runtime.cpu_prefers_bf16", lambda: True)
    cmd = [clip, "-o", tmp_path / "out", "--model", untrained_file, "--chunk-frames", 3, "--work", work]
    assert upsample(*cmd) == 130
    assert chunks.stored_precision(work / "out") == "bf16"
    monkeypatch.undo()
    monkeypatch.setattr("stvsr_core.runtime.cpu_prefers_bf16", lambda: False)  # the measurement flips
    capsys.readouterr()
    assert upsample(*cmd) == 0
    assert "skipped 0, 1, 2 (finished before, verified), rendering none" in capsys.readouterr().err


# -- errors: one line naming the fix, nothing half-written taken as done ---------------------------

def _last_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


def test_ray_missing(tmp_path, untrained_file, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    clip = make_clip(tmp_path / "in.mp4", count=3)
    assert upsample(clip, "-o", tmp_path / "out", "--model", untrained_file, "--ray") == 2
    msg = _last_line(capsys)
    assert msg.startswith("stvsr upsample: error: --ray needs Ray") and "pip install 'stvsr[ray]'" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_ray_address_that_does_not_answer(tmp_path, untrained_file, capsys):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'stvsr[ray]'")
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clip = make_clip(tmp_path / "in.mp4", count=3)
    assert upsample(clip, "-o", tmp_path / "out", "--model", untrained_file, f"--ray=127.0.0.1:{port}") == 2
    msg = _last_line(capsys)
    assert f"--ray=127.0.0.1:{port}: no Ray cluster answers there" in msg and "ray start --head" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_unreadable_input_in_a_batch(tmp_path, untrained_file, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "good.mp4", count=3)
    (clips / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    assert upsample(clips, "-o", tmp_path / "out", "--model", untrained_file) == 2
    msg = _last_line(capsys)
    assert "broken.mp4: cannot open as a video" in msg and msg.startswith("stvsr upsample: error:")
    assert list((tmp_path / "out").iterdir()) == []


def test_output_folder_not_writable(tmp_path, capsys):
    from test_cli import _unwritable_folder
    clips = tmp_path / "clips"
    clips.mkdir()
    make_clip(clips / "a.mp4", count=2)
    make_clip(clips / "b.mp4", count=2)
    folder = _unwritable_folder(tmp_path)
    assert upsample(clips, "-o", folder / "out", "--model", "no-such-model") == 2
    msg = _last_line(capsys)
    assert "cannot write there" in msg and "choose another output folder" in msg, msg


def test_one_command_at_a_time_on_a_job(tmp_path, untrained_file, capsys):
    import fcntl
    clip = make_clip(tmp_path / "in.mp4", count=4)
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    with open(work / "out" / ".lock", "a+") as held:  # another command holds the job
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert upsample(clip, "-o", tmp_path / "out", "--model", untrained_file, "--work", work) == 2
    msg = _last_line(capsys)
    assert "another stvsr command is running this job" in msg and not (tmp_path / "out").exists()
    assert upsample(clip, "-o", tmp_path / "out", "--model", untrained_file, "--work", work) == 0


def test_foreign_manifest(tmp_path, untrained_file, capsys):
    clip = make_clip(tmp_path / "in.mp4", count=4)
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "manifest.json").write_text(json.dumps({"key": "another job", "source": "/elsewhere/x.mp4",
                                                    "chunks": {"0": {"file": "chunk_00000.mkv"}}}))
    (work / "out" / "chunk_00000.mkv").write_bytes(b"not ours")
    cmd = [clip, "-o", tmp_path / "out", "--model", untrained_file, "--work", work]
    assert upsample(*cmd) == 2
    msg = _last_line(capsys)
    assert "holds another job's chunks" in msg and "/elsewhere/x.mp4" in msg and "--overwrite" in msg
    assert not (tmp_path / "out").exists()
    assert upsample(*cmd, "--overwrite") == 0 and len(pngs(tmp_path / "out")) == 7


def test_chunk_that_fails_permanently(tmp_path, untrained_file, capsys, monkeypatch):
    """A chunk that cannot be rendered: one line naming it and the fix, no output, the finished
    chunks kept; the rerun renders only the rest."""
    from stvsr_core import cluster
    clip = make_clip(tmp_path / "in.mp4", count=10)
    render = cluster.render_chunk

    def failing(engine, source, chunk, *a, **k):
        if chunk.index == 2:
            raise chunks.ChunkError(f"{source}: frame {chunk.first + 1} is damaged")
        return render(engine, source, chunk, *a, **k)
    monkeypatch.setattr(cluster, "render_chunk", failing)
    work = tmp_path / "work"
    cmd = [clip, "-o", tmp_path / "out.mkv", "--model", untrained_file, "--chunk-frames", 3, "--work", work]
    assert upsample(*cmd) == 2
    msg = _last_line(capsys)
    assert "chunk 2 (source frames 4-6" in msg and "frame 5 is damaged" in msg and "rerun the same command" in msg
    assert "2 finished chunk(s) are kept" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "work"]
    assert sorted(p.name for p in (work / "out.mkv").iterdir()) == [".lock", "chunk_00000.mkv", "chunk_00001.mkv",
                                                                     "manifest.json"]
    monkeypatch.setattr(cluster, "render_chunk", render)
    assert upsample(*cmd) == 0
    assert "skipped 0, 1 (finished before, verified), rendering 2, 3, 4" in capsys.readouterr().err
