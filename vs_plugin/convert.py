"""Format conversion around the filter: any constant format in, planar float RGB (0..1) for the
network, the input's own format out with the same levels and colour tags.

The colour comes from the first frame's props. `_Range` has R74's meaning (vs.Range: LIMITED
is 0, FULL is 1; the `_ColorRange` it replaced had them the other way round); untagged YUV and
GRAY are taken as limited range, untagged RGB as full. The YUV matrix is `matrix_in_s`, else
`_Matrix`, else BT.709 for HD and BT.601 (170m) for SD. The way back uses the same matrix, range
and chroma location, so an untagged clip comes back tagged with what it was taken to be (its
doubled size would otherwise move an SD clip into the HD convention). Values outside the nominal
range (super-whites, sub-blacks, out-of-gamut colours) are clipped: the engine works on RGB in
0..1, as the CLI does, so both give the same frames.
"""
from __future__ import annotations

from typing import Callable

import vapoursynth as vs

core = vs.core

# the matrices resize converts YUV with: matrix_in_s name -> _Matrix value
MATRICES = {"709": 1, "fcc": 4, "470bg": 5, "170m": 6, "240m": 7, "ycgco": 8, "2020ncl": 9, "2020cl": 10,
            "chromancl": 12, "chromacl": 13, "ictcp": 14}


def default_matrix(width: int, height: int) -> str:
    """The usual convention for untagged video: BT.709 for HD, BT.601 (170m) for SD."""
    return "709" if width > 1024 or height > 576 else "170m"


def colour_range(props, family: int) -> str:
    """'full' or 'limited', as the frame is tagged; untagged: full for RGB, limited otherwise."""
    if "_Range" in props:  # R74+: 0 limited, 1 full
        return "full" if int(props["_Range"]) == 1 else "limited"
    if "_ColorRange" in props:  # before R74: 0 full, 1 limited
        return "full" if int(props["_ColorRange"]) == 0 else "limited"
    return "full" if family == vs.RGB else "limited"


def _matrix(props, clip: vs.VideoNode, matrix_in_s: str | None) -> int:
    if matrix_in_s is not None:
        return MATRICES[matrix_in_s]
    tag = int(props.get("_Matrix", 2))
    return tag if tag in MATRICES.values() else MATRICES[default_matrix(clip.width, clip.height)]


def _set_prop(clip: vs.VideoNode, key: str, value) -> vs.VideoNode:
    return clip.std.RemoveFrameProps(key) if value is None else clip.std.SetFrameProps(**{key: value})


def to_rgb(clip: vs.VideoNode, matrix_in_s: str | None = None, props=None) -> tuple[vs.VideoNode, Callable]:
    """(RGBS or RGBH clip, function that converts a result back to the input's format). `props`:
    frame 0's, when the caller already has them (rendering frame 0 may be costly upstream)."""
    fmt = clip.format
    if fmt.color_family == vs.RGB and fmt.sample_type == vs.FLOAT and fmt.bits_per_sample in (16, 32):
        return clip, lambda out: out
    if fmt.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise vs.Error(f"stvsr.Upsample: unsupported colour family of {fmt.name}: use RGB, YUV or GRAY")
    props = clip.get_frame(0).props if props is None else props
    rng = colour_range(props, fmt.color_family)
    if fmt.color_family == vs.RGB:
        return (clip.resize.Point(format=vs.RGBS, range_in_s=rng),
                lambda out: out.resize.Point(format=fmt.id, range_s=rng))
    if fmt.color_family == vs.GRAY:
        grays = clip.resize.Point(format=vs.GRAYS, range_in_s=rng)
        rgb = core.std.ShufflePlanes([grays] * 3, [0, 0, 0], vs.RGB).std.SetFrameProps(_Matrix=0)
        matrix = props.get("_Matrix")  # RGB's 0 on the way through; the input's own tag on the way out

        def gray_back(out):
            gray = core.std.ShufflePlanes(out, 0, vs.GRAY).resize.Point(format=fmt.id, range_s=rng)
            return _set_prop(gray, "_Matrix", matrix)
        return rgb, gray_back
    matrix = _matrix(props, clip, matrix_in_s)
    chromaloc = props.get("_ChromaLocation")  # resize reads it on the way in; None: resize's default
    rgb = clip.resize.Bicubic(format=vs.RGBS, matrix_in=matrix, range_in_s=rng)
    return rgb, lambda out: out.resize.Bicubic(format=fmt.id, matrix=matrix, range_s=rng, chromaloc=chromaloc)
