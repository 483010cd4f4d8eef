"""Training and evaluation at in-between times other than 1/2 (issue 11, item 8)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stvsr_core import DualStream
from stvsr_core.cli import main
from stvsr_core.data import Clip, TripletBatch, TripletSampler, time_steps
from stvsr_core.devsets import vimeo_times
from stvsr_core.evaluate import evaluate
from stvsr_core.train import stage_loss

from helpers import CONFIGS, ROOT, random_model


def index_clip(n=40, cut_after=19, size=24):
    """A clip whose frame k is the uniform value 4k (so a crop's mean names its frame), with a
    hard cut between frames `cut_after` and `cut_after + 1`."""
    frames = np.stack([np.full((size, size, 3), 4 * k, np.uint8) for k in range(n)])
    valid = np.array([k for k in range(n - 2) if cut_after not in (k, k + 1)])
    return Clip("index", frames, valid)


def frame_indices(b: TripletBatch) -> np.ndarray:
    """[B, 3]: the frame index of each triplet's three frames."""
    return (b.frames.mean(dim=(2, 3, 4)) * 255 / 4).round().numpy()


@pytest.mark.parametrize("gaps", [(1,), (2,)])
def test_sampler_draws_the_frame_at_each_t(gaps):
    clip = index_clip()
    sampler = TripletSampler([clip], crop=16, seed=1, gaps=gaps, times=(1 / 3, 1 / 2, 2 / 3))
    seen = set()
    for _ in range(20):
        b = sampler.batch(8)
        assert b.frames.shape == (8, 3, 3, 16, 16) and b.t.shape == (8,)
        for (a, mid, c), t in zip(frame_indices(b), b.t.tolist()):
            i, g = time_steps(t)
            span = gaps[0] * g
            assert abs(c - a) == span and mid - a == pytest.approx(t * (c - a))  # frame k+i of k..k+g
            lo, hi = sorted((a, c))
            assert hi <= 19 or lo >= 20  # never across the cut
            seen.add(round(t, 4))
    assert seen == {0.3333, 0.5, 0.6667}  # every time, reversed clips giving 1 - t


def test_default_sampler_is_todays_triplets():
    b = TripletSampler([index_clip()], crop=16, seed=0).batch(32)
    idx = frame_indices(b)
    assert (b.t == 0.5).all()
    assert (np.abs(idx[:, 2] - idx[:, 0]) == 2).all() and (idx[:, 1] * 2 == idx[:, 0] + idx[:, 2]).all()


def test_photo_triplets_move_to_the_fraction_t():
    """A ramp photo (value = column): with rotation and zoom nearly nil the middle crop's shift
    from the first one is t of the whole shift."""
    ramp = np.tile(np.linspace(0, 255, 400)[None, :, None], (300, 1, 3)).astype(np.uint8)
    sampler = TripletSampler([index_clip()], [ramp], crop=48, seed=3, photo_fraction=1.0, times=(1 / 3, 2 / 3))
    checked = 0
    for _ in range(40):
        b = sampler.batch(1)
        x = b.frames[0, :, 0, 8:-8, 8:-8].mean(dim=(1, 2)).double()  # away from the rotated corners
        t = b.t.item()
        if abs(x[2] - x[0]) > 0.03:  # enough motion to measure
            assert ((x[1] - x[0]) / (x[2] - x[0])).item() == pytest.approx(t, abs=0.12)
            checked += 1
    assert checked >= 10


def test_time_steps():
    assert time_steps(0.5) == (1, 2) and time_steps(1 / 3) == (1, 3) and time_steps(2 / 3) == (2, 3)
    with pytest.raises(ValueError):
        time_steps(1.0)


def spy_times(model):
    """Record the t of every M_T, stream and cue call (the methods stay the model's own)."""
    seen = []

    def wrap(f, at):  # t is the positional argument `at` of each (L0, L1, H0, H1, t / I0, I1, t)
        def g(*args, **kw):
            seen.append(args[at] if len(args) > at else kw.get("t", 0.5))
            return f(*args, **kw)
        return g
    model.interpolate = wrap(model.interpolate, 4)
    model.cue, model.M_T.forward = wrap(model.cue, 2), wrap(model.M_T.forward, 2)
    return seen


@pytest.mark.parametrize("config", ["lite-dis", "espcn-ifnet"])
def test_stage_loss_passes_each_samples_t(config):
    torch.manual_seed(0)
    model = DualStream(CONFIGS[config])
    seen = spy_times(model)
    frames = torch.rand(2, 3, 3, 32, 32)
    t = torch.tensor([1 / 3, 2 / 3])
    for stage in (1, 2, 3):
        seen.clear()
        loss, terms = stage_loss(model, TripletBatch(frames, t), stage)
        assert torch.isfinite(loss)
        if stage > 1 or "M_T" in model.info.trainable:
            assert seen and all(x is t for x in seen), (stage, seen)
        # a bare tensor of triplets is t = 1/2, as before TripletBatch
        seen.clear()
        stage_loss(model, frames, stage)
        assert all(x == 0.5 for x in seen)
    loss, _ = stage_loss(model, TripletBatch(frames, torch.tensor([0.25, 0.75])), 3)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.F.parameters())


def test_stage3_loss_depends_on_t():
    """DIS's in-between frame at 1/3 and 2/3 is not its frame at 1/2: the loss sees the t."""
    torch.manual_seed(0)
    model = DualStream()
    frames = torch.rand(2, 3, 3, 32, 32)
    a = stage_loss(model, TripletBatch(frames, torch.tensor([1 / 3, 2 / 3])), 3)[1]["S->T"].item()
    b = stage_loss(model, TripletBatch(frames, torch.tensor([0.5, 0.5])), 3)[1]["S->T"].item()
    assert a != pytest.approx(b, rel=1e-3)


def moving_septuplets(root, clips=2, size=(40, 48)):
    """`NAME_13/_35/_57` folders of a bright square that moves 2 px a frame, frame index also in
    the blue channel: frames 1-3, 3-5 and 5-7 of each clip, as in the Vimeo dev set."""
    h, w = size
    for c in range(clips):
        frames = []
        for f in range(1, 8):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 2] = 30 * f
            img[10:22, 4 + 2 * f + c:16 + 2 * f + c, :2] = 220
            frames.append(img)
        for part, first in (("13", 1), ("35", 3), ("57", 5)):
            d = root / f"{c:05d}_0001_{part}"
            d.mkdir(parents=True)
            for j in range(3):
                Image.fromarray(frames[first - 1 + j]).save(d / f"im{j + 1}.png")


def test_vimeo_times_frames_and_eval_per_t(tmp_path, untrained_file, capsys):
    sept, out = tmp_path / "sept", tmp_path / "vimeo_times"
    moving_septuplets(sept)
    assert vimeo_times(sept, out) == 4
    blue = lambda p: int(np.array(Image.open(p))[0, 0, 2]) // 30
    assert [blue(out / "00000_0001_15" / f"im{j}.png") for j in range(1, 6)] == [1, 2, 3, 4, 5]
    assert [blue(out / "00001_0001_37" / f"im{j}.png") for j in range(1, 6)] == [3, 4, 5, 6, 7]
    js, save = tmp_path / "r.json", tmp_path / "pred"
    assert main(["eval", str(out), "--model", str(untrained_file), "--no-peers", "--json", str(js),
                 "--save", str(save)]) == 0
    res = json.loads(js.read_text())
    assert set(res) == {"vimeo_times t=1/4", "vimeo_times t=1/2", "vimeo_times t=3/4"}
    for rows in res.values():
        for k in ("H_R", "H_F", "H_st", "H_ts", "DIS S->T", "bicubic + blend"):
            assert rows[k]["n"] == 4 and 5 < rows[k]["psnr"] < 80
    printed = capsys.readouterr().out
    assert "vimeo_times t=1/4 (4 triplets)" in printed and "vimeo_times t=3/4" in printed
    assert len(list((save / "vimeo_times").glob("*.png"))) == 12
    # each t is scored against its own real frame: the blue channel (the frame index) of the
    # blend is right only at the matching t, so moving the target must cost PSNR
    model = random_model()
    wrong = tmp_path / "wrong"
    vimeo_times(sept, wrong)
    spec = json.loads((wrong / "times.json").read_text())
    spec["targets"] = [[f, 1 - t] for f, t in spec["targets"]]  # im2 labelled t = 3/4 ...
    (wrong / "times.json").write_text(json.dumps(spec))
    bad = evaluate([wrong], model, peers=False)
    assert bad["wrong t=3/4"]["bicubic + blend"]["psnr"] < res["vimeo_times t=1/4"]["bicubic + blend"]["psnr"] - 3


def test_multi_t_recipes_and_the_4x_model():
    from stvsr_core.cli_train import init_part
    from stvsr_core.recipes import RECIPES
    multi_t = ("stvsr-fast-times", "stvsr-fast-x4", "stvsr-fast-dis-refine", "stvsr-fast-dis-refine-splat")
    assert all("times" not in r for k, r in RECIPES.items() if k not in multi_t)
    shipped = str(ROOT / "stvsr_core" / "weights" / "stvsr-fast.safetensors")
    for name, scale in (("stvsr-fast-times", 2), ("stvsr-fast-x4", 4)):
        r = RECIPES[name]
        assert r["times"] == (1 / 3, 1 / 2, 2 / 3) and [time_steps(t) for t in r["times"]] == [(1, 3), (1, 2), (2, 3)]
        model = DualStream(r["model"]).eval()
        for part in ("F", "R"):  # F and R work at any scale: both start from stvsr-fast's
            init_part(model, shipped, part)
        L0, L1 = torch.rand(2, 1, 3, 16, 24)
        out = model(L0, L1, torch.tensor([0.25]))
        assert out.H_R.shape == (1, 3, 16 * scale, 24 * scale) and out.L_mid.shape == L0.shape
