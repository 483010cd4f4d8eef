"""Factor-2 regression check across commits: the frames every shipped model makes, saved at one
commit and compared at another (issue 11: "no behaviour changes at factor 2, same frames to 1e-5").

    git worktree add /tmp/old OLD_COMMIT && (cd /tmp/old && PYTHONPATH=. python tools/same_frames.py save /tmp/ref.pt)
    python tools/same_frames.py compare /tmp/ref.pt

Real frames of the bundled clip (160x96, 12 frames with a scene cut), fp32 on one thread, with and
without exact_double, one untiled and one tiled run per model; models whose pretrained backbones
are missing are skipped.
"""
import sys

import torch

from stvsr_core.bench import real_frames
from stvsr_core.engine import Engine, predict_pair
from stvsr_core.registry import list_models, load_model


def _engine(model, **opts):
    try:
        return Engine(model, "cpu", precision="fp32", threads=1, **opts)
    except TypeError:  # before the one precision option (commit 8594bbe)
        return Engine(model, "cpu", bf16=False, threads=1, **opts)


def frames_of_every_model() -> dict:
    torch.set_num_threads(1)
    frames = real_frames(160, 96, 6) + real_frames(160, 96, 6, first=0)
    out = {}
    for name in list_models():
        try:
            model = load_model(name)
        except Exception as e:  # noqa: BLE001  (missing backbones)
            print(f"{name}: skipped ({str(e).splitlines()[0]})")
            continue
        for exact in (False, True):
            out[f"{name}/run/exact_double={exact}"] = torch.stack(list(_engine(model, exact_double=exact).run(iter(frames))))
        pair = predict_pair(model, frames[0][None], frames[1][None], 0.5)
        for f in ("H_prev", "H_st", "H_ts", "H_F", "H_R"):
            out[f"{name}/pair/{f}"] = getattr(pair, f)
        out[f"{name}/tiled"] = torch.stack(list(_engine(model, tile=48, tile_pad=16).run(iter(frames[:3]))))
        print(name, flush=True)
    return out


def main(argv) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "compare"):
        print(__doc__)
        return 2
    mine = frames_of_every_model()
    if argv[0] == "save":
        torch.save(mine, argv[1])
        return 0
    ref = torch.load(argv[1])
    worst = 0.0
    for key, r in ref.items():
        if key not in mine:
            print(f"{key}: not made here")
            continue
        d = float((mine[key] - r).abs().max()) if mine[key].shape == r.shape else float("inf")
        print(f"{key}: max |diff| {d:.2e}")
        worst = max(worst, d) if "tiled" not in key else worst
    print(f"worst untiled max |diff|: {worst:.2e} ({'same frames' if worst <= 1e-5 else 'CHANGED'})")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
