"""The speed levers keep the results: low-res flows reused at high res, channels_last, the
OpenVINO backends; `stvsr bench` runs and reports; memory does not grow with clip length.
(Speed itself is measured by `stvsr bench`, not asserted here.)"""
import json
import shutil

import pytest
import torch

from stvsr_core import DualStream, Engine, InputError, load_model
from stvsr_core.engine import predict_pair
from stvsr_core.bench import PeakRSS, real_frames as bench_frames
from stvsr_core.cli import main
from stvsr_core.degrade import downsample
from stvsr_core.temporal import DISInterp

from helpers import random_model, real_frames

psnr = lambda a, b: float(-10 * torch.log10((a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean()))


def test_upsampled_flows_scale_vectors_and_size():
    f01 = torch.zeros(1, 2, 10, 20)
    f01[:, 0] = 3.0  # 3 px to the right at low res
    up = DISInterp.upsample_flows((f01, -f01), (1, 3, 20, 40))
    assert up[0].shape == (1, 2, 20, 40) and torch.allclose(up[0][:, 0], torch.full((1, 20, 40), 6.0))
    assert torch.allclose(up[1][:, 0], torch.full((1, 20, 40), -6.0))


def test_low_res_flows_at_high_res_on_real_frames():
    """Reusing DIS's low-res flows for stream S->T: same L_mid, an in-between frame close to the
    truth (within 1 dB of DIS run again at high res) on real motion."""
    f = real_frames(start=40, count=3)
    L0, L1 = (downsample(x[None]) for x in (f[0], f[2]))
    m = DualStream({"scale": 2, "spatial": {"arch": "bicubic"}, "temporal": {"arch": "dis"}}).eval()
    est = predict_pair(m, L0, L1)
    m.M_T.high_res_flow = "upsample"
    up = predict_pair(m, L0, L1)
    assert torch.equal(est.L_mid, up.L_mid)
    assert psnr(up.H_st, f[1][None]) > psnr(est.H_st, f[1][None]) - 1.0
    assert psnr(up.H_st, f[1][None]) > 25


def test_channels_last_engine_matches_plain_model_on_real_frames():
    model = load_model("default")
    f = real_frames(start=40, count=2)
    out = list(Engine(model, "cpu", scene_threshold=None, precision="fp32").run(f))
    ref = predict_pair(load_model("default"), f[0][None], f[1][None])
    assert (out[0] - ref.H_prev[0].clamp(0, 1)).abs().max() < 1e-4
    # the in-between frame: 1e-7 float differences can flip a pixel of DIS's 8-bit luma input
    d = (out[1] - ref.H_R[0].clamp(0, 1)).abs()
    assert d.max() < 1 / 255 and d.mean() < 1e-5


def test_backend_choices_are_checked():
    with pytest.raises(InputError, match="backend must be one of"):
        Engine(random_model(), "cpu", backend="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(InputError):
            Engine(random_model(), "cuda", backend="openvino")


@pytest.mark.parametrize("backend, min_psnr", [("openvino", 60), ("openvino-bf16", 35)])
def test_openvino_backends_agree_with_torch_on_real_frames(backend, min_psnr):
    pytest.importorskip("openvino", reason="optional backend: pip install 'stvsr[openvino]'")
    model = load_model("default")
    f = real_frames(start=40, count=3)
    ref = list(Engine(model, "cpu", precision="fp32").run(f))
    out = list(Engine(load_model("default"), "cpu", backend=backend).run(f))
    assert len(out) == len(ref) == 5
    for a, b in zip(out, ref):
        assert psnr(a, b) > min_psnr


def test_bench_command_reports_everything(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--sizes", "64x48", "--frames", "3", "--runs", "1", "--json", str(out),
                 "--memory-lengths", "4", "8"]) == 0
    table = capsys.readouterr().out
    assert "output frames/s" in table and "% of peak" in table
    r = json.loads(out.read_text())
    assert r["machine"]["peak_gflop_per_s"] > 0
    row = r["sizes"][0]
    ours = row["backends"]["default (torch)"]
    assert ours["frames_out"] == 5 and ours["fps_out"] > 0 and ours["peak_rss_mib"] > 0
    cue = {"cue"} if load_model("default").needs_cue else set()  # F's DIS warp-error input (stvsr-fast-v2)
    assert set(ours["stages"]) == {"M_S", "M_T estimate", "M_T", "M_S (T->S)", "F", "R"} | cue
    assert ours["stages"]["M_S"]["gflop_per_output_frame"] > 0
    assert 0 < ours["conv_stages_fraction_of_peak"]
    if shutil.which("ffmpeg"):
        assert row["ffmpeg"]["frames_out"] > 0 and ours["ratio_to_ffmpeg"] > 0
    else:
        assert row["ffmpeg"] is None
    assert [v["frames_out"] for v in r["memory_by_length"]["lengths"].values()] == [7, 15]


def test_bench_rejects_bad_sizes(capsys):
    assert main(["bench", "--sizes", "480by270", "--no-ffmpeg"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_bench_frames_are_real_and_sized():
    frames = bench_frames(96, 54, 5)
    assert [tuple(f.shape) for f in frames] == [(3, 54, 96)] * 5
    assert all(0.05 < float(f.std()) for f in frames)
    assert not torch.equal(frames[0], frames[1])


def test_memory_does_not_grow_with_clip_length():
    """Streaming: 40 and 400 frames peak at the same memory (within allocator noise)."""
    engine = Engine(load_model("default"), "cpu")
    frames = bench_frames(96, 64, 8)

    def peak(n):
        with PeakRSS() as mem:
            count = sum(1 for _ in engine.run((frames[i % 8] for i in range(n)), total=n))
        assert count == 2 * n - 1
        return mem.mib
    peak(40)  # warm-up: first-call allocations
    short, long = peak(40), peak(400)
    assert long - short < 20, (short, long)


def test_bf16_on_real_frames_stays_close_to_fp32():
    """bfloat16 networks (the default on CPUs with AMX/AVX512-BF16): the convolutions round, the
    bicubic and residual skips stay float32. SR frames stay within 60 dB of fp32; the in-between
    frame is as close to the real frame as fp32's (a rounded pixel can move a DIS flow vector,
    so the two differ locally, not on average)."""
    f = real_frames(start=40, count=3)
    L = [downsample(x[None])[0] for x in (f[0], f[2])]
    ref = list(Engine(load_model("default"), "cpu", precision="fp32").run(L))
    out = list(Engine(load_model("default"), "cpu", precision="bf16").run(L))
    assert psnr(out[0], ref[0]) > 60 and psnr(out[2], ref[2]) > 60
    assert abs(psnr(out[1], f[1]) - psnr(ref[1], f[1])) < 0.1


def test_bf16_default_follows_the_cpu_and_conflicts_are_refused():
    from stvsr_core.precision import cpu_prefers_bf16
    assert Engine(random_model(), "cpu").runtime.bf16 == cpu_prefers_bf16()
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        Engine(random_model(), "cpu", precision="fp16")
    with pytest.raises(InputError, match="sets its own precision"):
        Engine(random_model(), "cpu", precision="bf16", backend="openvino")


def test_bench_configs_cover_the_cli_choices():
    import argparse
    from stvsr_core.bench import CONFIGS
    from stvsr_core.cli_bench import add_parser
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    for name in CONFIGS:  # every configuration is a choice ...
        assert parser.parse_args(["bench", "--backends", name]).backends == [name]
    with pytest.raises(SystemExit):  # ... and nothing else is
        parser.parse_args(["bench", "--backends", "tensorrt"])


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile needs a C compiler")
def test_torch_compile_backend_agrees_with_eager_on_real_frames(monkeypatch):
    # compile in this process: Inductor's pool of forked compile workers hung once in CI (fork
    # of a multi-threaded process), and on 2 cores it buys nothing
    import torch._inductor.config as inductor
    monkeypatch.setattr(inductor, "compile_threads", 1)
    f = real_frames(start=40, count=2, size=(160, 68))
    ref = list(Engine(load_model("default"), "cpu", precision="fp32").run(f))
    out = list(Engine(load_model("default"), "cpu", precision="fp32", backend="torch-compile").run(f))
    assert psnr(out[0], ref[0]) > 60
    assert psnr(out[1], ref[1]) > 40  # a rounded pixel can move a DIS flow vector


def test_parallel_pairs_give_the_same_frames_in_order():
    f = real_frames(start=4, count=9)  # includes the hard cut after frame 9
    one = list(Engine(load_model("default"), "cpu", workers=1, precision="fp32").run(f))
    two = list(Engine(load_model("default"), "cpu", workers=2, precision="fp32").run(f))
    assert len(one) == len(two) == 17
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="workers"):
        Engine(random_model(), "cpu", workers=-1)
