"""`stvsr eval ROOT...`: the development-set table (baselines and every stage)."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .evaluate import evaluate, format_table
from .registry import load_model


def add_parser(sub):
    p = sub.add_parser("eval", help="score baselines and every model stage on triplet/sequence folders")
    p.add_argument("roots", nargs="+", help="dataset folders, e.g. ../shared/data/eval/vimeo_septuplet")
    p.add_argument("--model", default="default", help="shipped model name or .safetensors path")
    p.add_argument("--json", help="write the scores as JSON here")
    p.add_argument("--save", help="write every predicted middle frame (H_R) as PNG under this folder")
    p.set_defaults(func=run)


def run(args) -> int:
    model = load_model(args.model)
    bars = {}

    def progress(ds, i, n):
        bar = bars.get(ds) or bars.setdefault(ds, tqdm(total=n, desc=ds, dynamic_ncols=True))
        bar.update(1)
        if i == n:
            bar.close()

    results = evaluate(args.roots, model, Path(args.save) if args.save else None, progress)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
