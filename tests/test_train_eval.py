"""`stvsr train` (single process, resumable, and data-parallel under torchrun) and `stvsr eval`."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from stvsr_core import load_weights
from stvsr_core.cli import main
from stvsr_core.metrics import psnr

from helpers import SHARED, RandomTriplets

TRAIN_CLIP = SHARED / "data" / "train" / "video" / "asl_again.mkv"
EVAL = SHARED / "data" / "eval"
needs_shared = pytest.mark.skipif(not TRAIN_CLIP.exists(), reason="../shared/data is not beside the checkout")


@needs_shared
def test_train_runs_stages_resumes_and_writes_weights(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--data", str(TRAIN_CLIP), "--photos", str(tmp_path / "none"),
            "--max-frames", "12", "--steps-scale", "0.0025", "--stages", "1,2"]
    assert main(args) == 0
    model = load_weights(out / "model.safetensors")
    assert model.config["spatial"]["arch"] == "unshuffle_sr"
    assert (out / "stage1.safetensors").exists() and (out / "stage2.safetensors").exists()
    rows = list(csv.DictReader(open(out / "loss_log.csv")))
    assert {r["stage"] for r in rows} == {"1", "2"}
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # a second run finds both stages complete and only re-exports
    before = (out / "loss_log.csv").read_text()
    assert main(args) == 0
    assert (out / "loss_log.csv").read_text() == before


def test_train_refuses_the_evaluation_set(tmp_path):
    with pytest.raises(SystemExit, match="evaluation set"):
        main(["train", "--out", str(tmp_path / "r"), "--data", str(EVAL / "ucf101")])


@needs_shared
def test_torchrun_data_parallel_on_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stvsr_core.cli", "train", "--out", str(out), "--data", str(TRAIN_CLIP),
           "--photos", str(tmp_path / "none"), "--max-frames", "12", "--steps-scale", "0.004", "--stages", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0/2" in r.stdout and "rank 1/2" in r.stdout
    assert load_weights(out / "model.safetensors").R.tail.weight.abs().sum() > 0  # R was trained


@needs_shared
def test_eval_table_json_and_saved_frames(tmp_path, untrained_file, capsys):
    root = tmp_path / "mini_ucf"
    root.mkdir()
    for name in ("001", "002"):
        shutil.copytree(EVAL / "ucf101" / name, root / name)
    seq = tmp_path / "mini_seq" / "clip"
    seq.mkdir(parents=True)
    for i in range(5):  # a sequence folder: frames 0, 2, 4 in; 1 and 3 predicted
        src = EVAL / "vimeo_septuplet" / sorted(os.listdir(EVAL / "vimeo_septuplet"))[0] / f"im{min(i, 2) + 1}.png"
        shutil.copy(src, seq / f"{i:03d}.png")
    js, save = tmp_path / "r.json", tmp_path / "pred"
    assert main(["eval", str(root), str(seq.parent), "--model", str(untrained_file),
                 "--json", str(js), "--save", str(save)]) == 0
    res = json.loads(js.read_text())
    assert set(res) == {"mini_ucf", "mini_seq"}
    for stage in ("H_st", "H_ts", "H_F", "H_R", "DIS S->T", "DIS T->S", "bicubic + blend"):
        assert res["mini_ucf"][stage]["n"] == 2 and 10 < res["mini_ucf"][stage]["psnr"] < 60
    assert res["mini_seq"]["H_R"]["n"] == 2
    assert sorted(p.name for p in (save / "mini_seq" / "clip").iterdir()) == ["001.png", "003.png"]
    # anyone can re-score the saved frames and get the table's figure
    scores = []
    for name in ("001", "002"):
        pred = torch.from_numpy(np.array(Image.open(save / "mini_ucf" / f"{name}.png"))).permute(2, 0, 1) / 255
        gt = torch.from_numpy(np.array(Image.open(root / name / "im2.png"))).permute(2, 0, 1) / 255
        scores.append(psnr(pred[None], gt[None, :, : pred.shape[1], : pred.shape[2]]))
    assert abs(np.mean(scores) - res["mini_ucf"]["H_R"]["psnr"]) < 1e-3
    assert "mini_ucf (2 triplets)" in capsys.readouterr().out


@needs_shared
def test_init_shares_pretrained_backbones(tmp_path, untrained_file):
    out = tmp_path / "combo"
    assert main(["train", "--out", str(out), "--data", str(TRAIN_CLIP), "--photos", str(tmp_path / "none"),
                 "--max-frames", "12", "--steps-scale", "0.001", "--stages", "2",
                 "--init", f"{untrained_file}:M_S"]) == 0
    donor, trained = load_weights(untrained_file), load_weights(out / "model.safetensors")
    for (k, a), b in zip(donor.M_S.state_dict().items(), trained.M_S.state_dict().values()):
        assert torch.equal(a, b), k  # copied, then frozen in stage 2
    with pytest.raises(SystemExit, match="part must be M_S, M_T, F or R"):
        main(["train", "--out", str(tmp_path / "x"), "--data", str(TRAIN_CLIP), "--init", f"{untrained_file}:Q"])


def test_interrupted_stage_resumes_from_its_checkpoint(tmp_path):
    from stvsr_core import DualStream
    from stvsr_core.checkpoint import read_checkpoint
    from stvsr_core.train import StageSpec, run_stage

    spec = StageSpec(steps=6, lr=1e-3, batch=2, crop=64)
    torch.manual_seed(0)
    model = DualStream()
    with pytest.raises(KeyboardInterrupt):
        run_stage(model, RandomTriplets(fail_at=5), 2, spec, tmp_path, checkpoint_every=2)
    assert read_checkpoint(tmp_path / "stage2.safetensors")[1]["step"] == 4  # the last checkpoint before the kill
    sampler = RandomTriplets()
    run_stage(DualStream(), sampler, 2, spec, tmp_path, checkpoint_every=2)
    assert sampler.n == 2  # only the two missing steps were run
    assert read_checkpoint(tmp_path / "stage2.safetensors")[1]["step"] == 6
