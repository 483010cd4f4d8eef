"""Distillation of a teacher's M_S (distill.py, `stvsr train --teacher`), the DIS preset "dense",
and F's cue read from the M_T's own flows."""
import csv
import json

import numpy as np
import pytest
import torch

from stvsr_core import DualStream, load_weights
from stvsr_core.cli import main
from stvsr_core.data import Clip, TripletSampler
from stvsr_core.degrade import downsample
from stvsr_core.distill import DistillBatch, DistillSampler, build, distill_loss
from stvsr_core.metrics import psnr
from stvsr_core.recipes import RECIPES
from stvsr_core.spatial import bicubic_up
from stvsr_core.temporal import DISInterp
from stvsr_core.weights import read_metadata

from helpers import SHARED, real_frames

TRAIN_CLIP = SHARED / "data" / "train" / "video" / "asl_again.mkv"
needs_shared = pytest.mark.skipif(not TRAIN_CLIP.exists(), reason="../shared/data is not beside the checkout")


def _clips():
    frames = np.stack([(f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                       for f in real_frames(0, 6, size=(240, 136))])
    return [Clip("bikes", frames, np.arange(len(frames) - 2))]


def _bicubic_teacher():
    return DualStream({"scale": 2, "spatial": {"arch": "bicubic"}, "temporal": {"arch": "dis"}}).eval()


def test_labels_hold_the_teacher_output_the_truth_and_native_crops(tmp_path):
    clips = _clips()
    folder = build(_bicubic_teacher(), TripletSampler(clips), clips, [], tmp_path / "labels", samples=40, crop=32,
                   block=16, log=lambda *_: None)
    blocks = sorted(folder.glob("labels_*.safetensors"))
    assert len(blocks) == 3
    s = DistillSampler(folder, scale=2, crop=64)
    assert len(s) == 40
    L, T, H = s.data["L"].float() / 255, s.data["teacher"].float(), s.data["target"].float() / 255
    lab = s.data["labelled"]
    assert 15 <= int(lab.sum()) <= 25  # half the crops have no ground truth (native frames)
    # the teacher (bicubic here) saw a margin around each crop: its labels equal bicubic of the
    # stored crop away from the border, where bicubic of the bare crop replicates pixels
    inner = (..., slice(8, -8), slice(8, -8))
    assert (T[inner] - bicubic_up(L, 2).clamp(0, 1)[inner]).abs().max() < 2e-3
    # labelled crops: L is the truth downsampled by the protocol; native crops have no truth
    assert psnr(downsample(H[lab], 2), L[lab]) > 45
    assert H[~lab].abs().max() == 0
    # resumable: a second build finds every block and writes nothing
    mtimes = [p.stat().st_mtime_ns for p in blocks]
    build(_bicubic_teacher(), TripletSampler(clips), clips, [], folder, samples=40, crop=32, block=16,
          log=lambda *_: None)
    assert [p.stat().st_mtime_ns for p in blocks] == mtimes


def test_distill_batch_and_loss(tmp_path):
    clips = _clips()
    folder = build(_bicubic_teacher(), TripletSampler(clips), clips, [], tmp_path / "labels", samples=16, crop=32,
                   block=16, log=lambda *_: None)
    s = DistillSampler(folder, scale=2, crop=48)
    b = s.batch(6)
    assert isinstance(b, DistillBatch)
    assert b.L.shape == (6, 3, 24, 24) and b.teacher.shape == b.target.shape == (6, 3, 48, 48)
    # a student that is the teacher (bicubic) has no teacher loss left, and a truth loss > 0
    student = DualStream({"scale": 2, "spatial": {"arch": "bicubic"}, "temporal": {"arch": "dis"}})
    s.rng = np.random.default_rng(3)
    b = s.batch(8)
    assert bool(b.labelled.any())
    _, terms = distill_loss(student, b)
    assert terms["M_S teacher"] < 2e-3  # away from flips and crops, bicubic of a crop = of its context
    assert terms["M_S"] > terms["M_S teacher"]


@needs_shared
def test_train_with_a_teacher_distils_stage_one(tmp_path, untrained_file):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "stvsr-fast-v2", "--out", str(out), "--data", str(TRAIN_CLIP),
                 "--photos", str(tmp_path / "none"), "--max-frames", "12", "--stages", "1",
                 "--steps-scale", "0.0005", "--teacher", str(untrained_file), "--teacher-samples", "8"]) == 0
    assert len(list((out / "teacher_labels").glob("labels_*.safetensors"))) == 1
    rows = list(csv.DictReader(open(out / "loss_log.csv")))
    assert rows and all("M_S teacher" in json.loads(r["terms"]) for r in rows)
    info = json.loads(read_metadata(out / "model.safetensors")["training"])
    assert info["teacher"] == str(untrained_file)
    assert load_weights(out / "model.safetensors").M_T.preset == "dense"


def test_teacher_refusals(tmp_path, untrained_file):
    with pytest.raises(SystemExit, match="stage 1, which this run does not train"):
        main(["train", "--recipe", "stvsr-fast-v2", "--out", str(tmp_path / "r"), "--stages", "2",
              "--teacher", str(untrained_file)])


def test_dense_preset_follows_large_motion_better_than_medium():
    """A real frame moved by 11 px: the dense preset's flow is closer to the truth."""
    f = real_frames(30, 1, size=(320, 180))[0][None]
    shift = 11
    I0, I1 = f[..., :, shift:shift + 288], f[..., :, :288]  # I1 is I0 moved right by `shift`
    errs = {}
    for preset in ("medium", "dense"):
        f01, _ = DISInterp(preset=preset).flows(I0, I1)
        errs[preset] = (f01[0, 0, 20:-20, 40:-40] - shift).abs().mean().item()
    assert errs["dense"] <= errs["medium"] + 0.05
    assert errs["dense"] < 1.0


def test_f_cue_reads_the_dis_m_t_flows_once():
    cfg = RECIPES["stvsr-fast-v2"]["model"]
    m = DualStream(cfg).eval()
    assert m._cue_dis is None  # no second DIS for the cue: the M_T's own flows
    calls = []
    flows = m.M_T.flows
    m.M_T.flows = lambda *a: calls.append(1) or flows(*a)
    L0 = real_frames(10, 1, size=(96, 64))[0][None]
    L1 = real_frames(12, 1, size=(96, 64))[0][None]
    with torch.no_grad():
        out = m(L0, L1)
        assert len(calls) == 1  # one flow estimate per pair: streams and cue
        m.M_T.flows = flows
        assert torch.equal(m.cue(L0, L1), m.cue(L0, L1, estimate=m.estimate(L0, L1)))
    assert torch.isfinite(out.H_R).all()


def test_one_mask_f_starts_from_stream_st():
    """init_st: F's one mask starts at M_st = 0.95 (from the better stream, not the average)."""
    m = DualStream(RECIPES["stvsr-fast-v2"]["model"]).eval()
    L0 = real_frames(10, 1, size=(96, 64))[0][None]
    L1 = real_frames(12, 1, size=(96, 64))[0][None]
    with torch.no_grad():
        out = m(L0, L1)
    assert torch.allclose(out.M_st, torch.full_like(out.M_st, 0.95), atol=1e-5)
    assert torch.allclose(out.M_st + out.M_ts, torch.ones_like(out.M_st))
    with pytest.raises(ValueError, match="init_st"):
        DualStream({**RECIPES["stvsr-fast-v2"]["model"], "fusion": {"preset": "fast", "masks": 1, "init_st": 1.0}})
