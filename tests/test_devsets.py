"""The development sets without the dev set's synthetic global shifts (stvsr_core.devsets)."""
import numpy as np
import pytest
from PIL import Image

from stvsr_core.devsets import is_global_shift, real_motion, vimeo_real, vimeo_wide

from helpers import SHARED, real_frames


def _save(path, x):
    Image.fromarray(np.ascontiguousarray(x)).save(path)
    return path


def test_one_translation_is_a_global_shift_and_two_motions_are_not(tmp_path):
    """A real frame shifted 8 px (its border smeared, as in the dev set) is one translation; the
    same frame unmoved is not a shift; half of it moving the other way is two motions."""
    img = (real_frames(0, 1, size=(320, 192))[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    shifted = np.pad(img, ((0, 0), (8, 0), (0, 0)), mode="edge")[:, :-8]
    two = shifted.copy()
    two[96:] = np.pad(img, ((0, 0), (0, 8), (0, 0)), mode="edge")[96:, 8:]
    a = _save(tmp_path / "a.png", img)
    assert is_global_shift(a, _save(tmp_path / "b.png", shifted))
    assert not is_global_shift(a, a)
    assert not is_global_shift(a, _save(tmp_path / "c.png", two))


def test_the_real_motion_sets_keep_the_dev_sets_real_clips(tmp_path):
    src = SHARED / "data" / "eval" / "vimeo_septuplet"
    if not src.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    real = real_motion(src)
    # the dev set's 00001_* septuplets are one image shifted a frame at a time, 00002_* real video
    assert sorted(real) == [f"00002_{i:04d}" for i in range(1, 9)]
    assert vimeo_real(src, tmp_path / "real") == 24
    assert vimeo_wide(src, tmp_path / "wide", only=set(real)) == 8
    one = tmp_path / "real" / "00002_0001_35" / "im2.png"
    assert np.array_equal(np.array(Image.open(one)), np.array(Image.open(src / "00002_0001_35" / "im2.png")))
