"""`stvsr bench --pareto` (issue 15 item 4): every point measured in one run, ffmpeg scored on
the same triplets as the models, and one clear line for what is missing."""
import json
import shutil

import pytest
from PIL import Image

from stvsr_core.cli import main
from stvsr_core.degrade import downsample
from stvsr_core.metrics import psnr

from helpers import real_frames

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _dev_set(root, starts=(20, 40)):
    """A dev set of real triplets (im1..im3.png) from the bundled clip."""
    for s in starts:
        d = root / f"t{s}"
        d.mkdir(parents=True)
        for i, f in enumerate(real_frames(start=s, count=3, size=(160, 96)), 1):
            Image.fromarray((f * 255).round().byte().permute(1, 2, 0).numpy()).save(d / f"im{i}.png")
    return root


@needs_ffmpeg
def test_ffmpeg_middle_is_the_in_between_frame():
    """A real frame panned by 8 px between the two inputs: the middle (panned by 4) is the truth."""
    from stvsr_core.pareto import ffmpeg_middle
    frame = real_frames(start=40, count=1)[0]
    f = [frame[:, 40:232, 100 + dx:420 + dx][None] for dx in (0, 4, 8)]
    L0, L1 = downsample(f[0], 2), downsample(f[2], 2)
    mid = ffmpeg_middle(L0, L1, shutil.which("ffmpeg"))
    assert mid.shape == f[1].shape
    assert psnr(mid, f[1]) > max(psnr(mid, f[0]), psnr(mid, f[2])) + 3


@needs_ffmpeg
@pytest.mark.slow
def test_pareto_plots_every_point_measured_in_one_run(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    dev = _dev_set(tmp_path / "dev")
    out, js = tmp_path / "p.png", tmp_path / "p.json"
    assert main(["bench", "--pareto", str(out), "--models", "stvsr-fast", "--dev-sets", str(dev),
                 "--sizes", "64x48", "--frames", "3", "--runs", "1", "--json", str(js)]) == 0
    points = {p["name"]: p for p in json.loads(js.read_text())["points"]}
    assert set(points) == {"stvsr-fast", "DIS S->T (bicubic, then DIS)", "ffmpeg minterpolate + lanczos"}
    assert all(p["fps_out"] > 0 and 10 < p["psnr"]["dev"] < 60 for p in points.values())
    assert Image.open(out).size[0] > 300
    table = capsys.readouterr().out
    assert "| stvsr-fast |" in table and "dev PSNR" in table


def test_pareto_names_a_missing_dev_set(tmp_path, capsys):
    assert main(["bench", "--pareto", str(tmp_path / "p.png"), "--dev-sets", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0] and "stvsr devsets" in err[0]
