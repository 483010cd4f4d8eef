"""`stvsr eval ROOT...`: the development-set table (baselines, peers and every stage); `stvsr devsets`."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .evaluate import evaluate, format_table
from .registry import DEFAULT_MODEL, load_model


def add_parser(sub):
    p = sub.add_parser("eval", help="score baselines and every model stage on triplet/sequence folders")
    p.add_argument("roots", nargs="+", help="dataset folders, e.g. ../shared/data/eval/vimeo_septuplet")
    p.add_argument("--model", default="default",
                   help=f"shipped model name or .safetensors path (default: {DEFAULT_MODEL})")
    p.add_argument("--json", help="write the scores as JSON here (default: not written)")
    p.add_argument("--save", help="write every predicted middle frame (H_R) as PNG under this folder "
                                  "(default: not written)")
    p.add_argument("--no-peers", dest="peers", action="store_false",
                   help="skip the SPAN -> RIFE peer rows (computed by default when stvsr[peers] is installed)")
    p.set_defaults(func=run)

    d = sub.add_parser("devsets", help="build the large-motion and other-t dev sets (vimeo_wide, vimeo_times, cockatoo_wide) from ../shared/data")
    d.add_argument("out", nargs="?", default=str(Path("~/.cache/stvsr-devsets").expanduser()),
                   help="folder to write them into (default: %(default)s); never inside the repository")
    d.add_argument("--data", default="../shared/data", help="the shared data folder (default: %(default)s)")
    d.set_defaults(func=run_devsets)


def run_devsets(args) -> int:
    from .devsets import build
    if not (Path(args.data) / "eval" / "vimeo_septuplet").is_dir():
        print(f"stvsr devsets: {args.data}/eval/vimeo_septuplet not found: pass --data PATH_TO_SHARED_DATA")
        return 2
    sets = build(Path(args.data), Path(args.out).expanduser())
    print("evaluate with: stvsr eval " + " ".join(str(s) for s in sets))
    return 0


def run(args) -> int:
    model = load_model(args.model)
    bars = {}

    def progress(ds, i, n):
        bar = bars.get(ds) or bars.setdefault(ds, tqdm(total=n, desc=ds, dynamic_ncols=True))
        bar.update(1)
        if i == n:
            bar.close()

    results = evaluate(args.roots, model, Path(args.save) if args.save else None, progress, peers=args.peers)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
