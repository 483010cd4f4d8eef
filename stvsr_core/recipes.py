"""Training recipes of the shipped models: architecture plus the three stages' schedules.

Tuned for from-scratch training on a 2-core CPU in about an hour; scale the steps with
`stvsr train --steps-scale` on bigger machines. A recipe's `times` (default: 1/2 only) are
the in-between times its triplets are drawn at (data.TripletSampler).
"""
from __future__ import annotations

from .train import StageSpec

_STAGES = {1: StageSpec(steps=8000, lr=1e-3, batch=16, crop=96),
           2: StageSpec(steps=3000, lr=5e-4, batch=12, crop=128),
           3: StageSpec(steps=1500, lr=1e-4, batch=12, crop=128)}

_LITE_HEADS = {"fusion": {"preset": "lite", "masks": 2}, "refine": {"preset": "lite"}}

_FAST_HEADS = {"fusion": {"preset": "fast", "masks": 2}, "refine": {"preset": "lite"}}

# Stage 2 only, on the field's pretrained backbones (the paper's own set-up: existing M_S and
# M_T, F and R trained on top). Both streams are computed once per sample into a cache on
# 256 px crops (RIFE needs context) with frame gaps 1 and 2 (larger motion); F and R then
# train on 128 px crops of it.
# The multi-t recipes: F and R also learn the frames at 1/3 and 2/3 (3x frame rate, and
# the in-between times of any other factor lie between those the model has seen)
_TIMES = (1 / 3, 1 / 2, 2 / 3)

# 4x space: M_S from scratch (stage 1) on 192 px crops (48 px low-res); F and R on 256 px crops
# (64 px low-res, enough context for DIS) with smaller batches. Measured 0.33, 0.69 and 0.83 s a
# step on one thread: ~40 min in all
_X4_STAGES = {1: StageSpec(steps=3600, lr=1e-3, batch=16, crop=192),
              2: StageSpec(steps=900, lr=5e-4, batch=6, crop=256),
              3: StageSpec(steps=500, lr=1e-4, batch=6, crop=256)}

_QUALITY_STAGES = {2: StageSpec(steps=3000, lr=5e-4, batch=12, crop=128)}

_RIFE = {"arch": "rife", "weights": "rife-4.25"}
_PER_RESOLUTION = {"arch": "per_resolution", "low": {"arch": "dis", "preset": "medium"}, "high": _RIFE}


def _quality(temporal: dict, inputs: str) -> dict:
    """A recipe on the pretrained SPAN x2 M_S with this M_T and this F input (stage 2 only)."""
    fusion = {"preset": "lite", "masks": 2} | ({} if inputs == "streams" else {"inputs": inputs})
    return {"model": {"scale": 2, "spatial": {"arch": "span", "weights": "spanx2_ch48"}, "temporal": temporal,
                      "fusion": fusion, "refine": {"preset": "lite"}},
            "stages": _QUALITY_STAGES, "stream_cache": {"samples": 2400, "crop": 256, "gaps": (1, 2)}}


# stvsr-fast v2, the distilled student (issue 14): M_S distilled from stvsr-quality's SPAN
# (`--teacher stvsr-quality`, stage 1 on its labels), DIS preset "dense" once per pair at low
# res with upsampled flows, and an F that reads DIS's warp error from those same flows. Its one
# mask (M_ts = 1 - M_st) starts at M_st = 0.95: with two masks from 0.5 it stayed at the plain
# average of the streams (below the better one). F and R train on frame gaps 1 and 2 (larger
# motion). `_student(c)`: M_S c channels wide.
_V2_STAGES = {1: StageSpec(steps=8000, lr=1e-3, batch=16, crop=96, parts=("M_S",)),
              2: StageSpec(steps=3000, lr=5e-4, batch=12, crop=128),
              3: StageSpec(steps=1500, lr=1e-4, batch=12, crop=128)}


def _student(channels: int) -> dict:
    return {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": channels, "blocks": 2},
                      "temporal": {"arch": "dis", "preset": "dense", "high_res_flow": "upsample"},
                      "fusion": {"preset": "fast", "masks": 1, "inputs": "streams+dis_error", "init_st": 0.95},
                      "refine": {"preset": "lite"}},
            "stages": _V2_STAGES, "gaps": (1, 2), "distill": {"samples": 4000, "crop": 64, "unlabelled": 0.5}}


# stvsr-fast v3 (issue 14, item 3): v2 with an occlusion-aware M_T on DIS (dis_occlusion.DISOcclusion):
# per pixel, each frame's linear and splatted intermediate flows, weighted by a weight-free
# occlusion test, and R `fast` (v2's `lite` costs more and loses on clean footage). M_S and F
# start from stvsr-fast-v2 (--init); stage 2 trains F and R on its streams and stage 3
# fine-tunes all jointly, on frame gaps up to 3 (large motion)
def _v3(refine: str = "fast") -> dict:
    r = _student(64)
    r["model"]["temporal"] = {"arch": "dis_occlusion", "preset": "dense", "high_res_flow": "upsample"}
    r["model"]["refine"] = {"preset": refine}
    r["stages"] = {2: _V2_STAGES[2], 3: _V2_STAGES[3]}
    r["gaps"] = (1, 2, 3)
    del r["distill"]
    return r


RECIPES = {
    "stvsr-fast-v3": _v3(),
    # the same with v2's lite R: 0.2-0.3 dB below on the Vimeo sets, 0.3 above on ucf101, slower
    "stvsr-fast-v3-rlite": _v3("lite"),
    # the shipped default: M_S 64 channels wide (on AMX, as fast as 48; docs/MODELS.md has the curve)
    "stvsr-fast-v2": _student(64),
    "stvsr-fast-v2-w32": _student(32),
    "stvsr-fast-v2-w48": _student(48),
    "stvsr-fast-v2-w96": _student(96),
    # stream S->T as users run it (SPAN, then RIFE 4.25 at high resolution); stream T->S with DIS
    # at low resolution, then SPAN: two streams that fail in different places; the paper's F on
    # them learns to pass S->T through (docs/MODELS.md)
    "stvsr-quality-plain-f": _quality(_PER_RESOLUTION, "streams"),
    # the shipped stvsr-quality: the same streams, and F also reads where DIS's two warped
    # frames disagree (DualStream.cue), the cue it needs to pick the DIS stream where DIS holds
    "stvsr-quality": _quality(_PER_RESOLUTION, "streams+dis_error"),
    # stvsr-quality with stream T->S on DISOcclusion (each frame's linear and splatted flows chosen
    # per pixel by the occlusion test, as stvsr-fast-v3): a stronger DIS stream on large motion
    "stvsr-quality-occ": _quality({**_PER_RESOLUTION, "low": {"arch": "dis_occlusion", "preset": "medium"}},
                                  "streams+dis_error"),
    # the paper's set-up exactly: one M_T (RIFE 4.25) in both streams; F gains little (docs/MODELS.md)
    "stvsr-quality-rife": _quality(_RIFE, "streams"),
    # the same, with F also seeing where the streams disagree (|H_st - H_ts|)
    "stvsr-quality-rife-diff": _quality(_RIFE, "streams+diff"),
    "stvsr-fast": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                             "temporal": {"arch": "dis", "preset": "medium", "high_res_flow": "upsample"},
                             **_FAST_HEADS},
                   "stages": _STAGES},
    # stvsr-fast trained at t = 1/3, 1/2 and 2/3 (from stvsr-fast: --init its M_S, F and R; stages 2-3)
    "stvsr-fast-times": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                   "temporal": {"arch": "dis", "preset": "medium", "high_res_flow": "upsample"},
                                   **_FAST_HEADS},
                         "stages": {2: StageSpec(steps=1500, lr=5e-4, batch=12, crop=128),
                                    3: StageSpec(steps=750, lr=1e-4, batch=12, crop=128)},
                         "times": _TIMES},
    # stvsr-fast at 4x space: M_S (4x) from scratch, F and R (scale-free, from stvsr-fast: --init)
    "stvsr-fast-x4": {"model": {"scale": 4, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                "temporal": {"arch": "dis", "preset": "medium", "high_res_flow": "upsample"},
                                **_FAST_HEADS},
                      "stages": _X4_STAGES, "times": _TIMES},
    # stvsr-fast with a learned M_T on DIS (temporal.DISRefine): DIS's flows fixed, a small CNN
    # corrects the intermediate flows, visibility and colour. Stage 1 trains M_T alone (--init
    # M_S, F and R from stvsr-fast) on large motion: frame gaps 2 and 3, 224 px crops
    "stvsr-fast-dis-refine": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                        "temporal": {"arch": "dis_refine", "preset": "medium",
                                                     "high_res_flow": "upsample"},
                                        **_FAST_HEADS},
                              "stages": {1: StageSpec(steps=2400, lr=1e-3, batch=8, crop=224, parts=("M_T",))},
                              "times": _TIMES, "gaps": (2, 3)},
    # the same, its CNN also reading the DIS flows forward-splatted to t (softmax splatting by
    # warp consistency): intermediate flows that follow large motion (warp.splatted_intermediate_flows)
    "stvsr-fast-dis-refine-splat": {"model": {"scale": 2,
                                              "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                              "temporal": {"arch": "dis_refine", "preset": "medium",
                                                           "high_res_flow": "upsample", "splat": True},
                                              **_FAST_HEADS},
                                    "stages": {1: StageSpec(steps=2400, lr=1e-3, batch=8, crop=224, parts=("M_T",))},
                                    "times": _TIMES, "gaps": (2, 3)},
    # realtime: stream S->T alone (no F, no T->S, no R): M_S, then DIS (fast preset) once per pair
    # at low res with upsampled flows. M_S starts from stvsr-fast's (--init) and is fine-tuned
    # through the stream (stage 3; stages 1-2 have nothing to train here)
    "stvsr-realtime": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                 "temporal": {"arch": "dis", "preset": "fast", "high_res_flow": "upsample"},
                                 "fusion": {"preset": "none"}, "refine": {"preset": "none"}},
                       "stages": {3: StageSpec(steps=1200, lr=1e-4, batch=12, crop=128)}},
    # the default: compact CPU SR network + fixed DIS flow interpolation
    "stvsr-lite": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                             "temporal": {"arch": "dis", "preset": "medium"}, **_LITE_HEADS},
                   "stages": _STAGES},
    # the paper's fast spatial backbone with the same fixed temporal one
    "stvsr-espcn-dis": {"model": {"scale": 2, "spatial": {"arch": "espcn"},
                                  "temporal": {"arch": "dis", "preset": "medium"}, **_LITE_HEADS},
                        "stages": _STAGES},
    # fully learned: compact SR + IFNet-style interpolator
    "stvsr-lite-ifnet": {"model": {"scale": 2, "spatial": {"arch": "unshuffle_sr", "channels": 48, "blocks": 2},
                                   "temporal": {"arch": "ifnet_lite"}, **_LITE_HEADS},
                         "stages": _STAGES},
    "stvsr-espcn-ifnet": {"model": {"scale": 2, "spatial": {"arch": "espcn"},
                                    "temporal": {"arch": "ifnet_lite"}, **_LITE_HEADS},
                          "stages": _STAGES},
}
