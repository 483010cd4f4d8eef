"""Format conversion around the filter: any constant format in, planar float RGB for the
network, the input's own format out, using the clip's colour props (VapourSynth's resize)."""
from __future__ import annotations

from typing import Callable

import vapoursynth as vs

core = vs.core

# _Matrix frame-prop values that name a matrix resize can use (2 = unspecified)
_MATRIX_NAMES = {1: "709", 4: "fcc", 5: "470bg", 6: "170m", 7: "240m", 9: "2020ncl", 10: "2020cl"}


def default_matrix(width: int, height: int) -> str:
    """The usual convention for untagged video: BT.709 for HD, BT.601 (170m) for SD."""
    return "709" if width > 1024 or height > 576 else "170m"


def to_rgb(clip: vs.VideoNode, matrix_in_s: str | None = None) -> tuple[vs.VideoNode, Callable]:
    """(RGBS or RGBH clip, function that converts a result back to the input's format)."""
    fmt = clip.format
    if fmt.color_family == vs.RGB and fmt.sample_type == vs.FLOAT and fmt.bits_per_sample in (16, 32):
        return clip, lambda out: out
    if fmt.color_family == vs.RGB:
        return clip.resize.Point(format=vs.RGBS), lambda out: out.resize.Point(format=fmt.id)
    if fmt.color_family == vs.GRAY:
        grays = clip.resize.Point(format=vs.GRAYS)
        rgb = core.std.ShufflePlanes([grays] * 3, [0, 0, 0], vs.RGB).std.SetFrameProps(_Matrix=0)
        return rgb, lambda out: out.resize.Point(format=fmt.id, matrix_s="709")
    if fmt.color_family != vs.YUV:
        raise vs.Error(f"stvsr.Upsample: unsupported colour family of {fmt.name}: use RGB, YUV or GRAY")
    props = clip.get_frame(0).props
    matrix = matrix_in_s or _MATRIX_NAMES.get(int(props.get("_Matrix", 2)), default_matrix(clip.width, clip.height))
    tag = props["_Range"] if "_Range" in props else props.get("_ColorRange", 1)  # _ColorRange before R74
    range_s = "full" if int(tag) == 0 else "limited"
    rgb = clip.resize.Bicubic(format=vs.RGBS, matrix_in_s=matrix, range_in_s=range_s)
    return rgb, lambda out: out.resize.Bicubic(format=fmt.id, matrix_s=matrix, range_s=range_s)
