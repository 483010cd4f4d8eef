"""`stvsr train`: the three stages on real footage, then a shippable .safetensors."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .data import TripletSampler, load_clips, load_photos
from .devsets import HELD_OUT_CLIPS
from .dual_stream import DualStream
from .recipes import RECIPES
from .weights import load_pretrained, save_weights


def add_parser(sub):
    p = sub.add_parser("train", help="train a model with the paper's three stages")
    p.add_argument("--recipe", default="stvsr-lite", choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="run folder: checkpoints, loss_log.csv, model.safetensors")
    p.add_argument("--data", nargs="+", default=[str(Path("../shared/data/train"))],
                   help="folders of clips / frame folders (never the evaluation set)")
    p.add_argument("--photos", default=os.path.expanduser("~/.cache/stvsr-data/photos"),
                   help="photos for synthetic camera motion (from get-registry-data.sh); skipped if absent")
    p.add_argument("--stages", default="", help="e.g. 2,3 (default: every stage of the recipe)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's step count")
    p.add_argument("--max-frames", type=int, default=300, help="frames kept per clip")
    p.add_argument("--init", nargs="+", default=[], metavar="FILE:PART",
                   help="start sub-networks from trained ones, e.g. runs/a/stage1.safetensors:M_S other.safetensors:M_T "
                        "(the paper pre-trains M_S and M_T independently, so they can be shared across combos)")
    p.add_argument("--cache-samples", type=int, default=0,
                   help="recipes on frozen pretrained backbones: samples in the stream cache (0: the recipe's)")
    p.add_argument("--teacher", default="",
                   help="distil a teacher's M_S into stage 1 (e.g. stvsr-quality: SPAN x2): it labels crops once, "
                        "with and without ground truth, into OUT/teacher_labels (distill.py)")
    p.add_argument("--teacher-samples", type=int, default=0,
                   help="crops the teacher labels (0: the recipe's, else 4000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.set_defaults(func=run)


def run(args) -> int:
    if "RANK" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    from .train import train
    recipe = RECIPES[args.recipe]
    wanted = [int(s) for s in args.stages.split(",")] if args.stages else sorted(recipe["stages"])
    unknown = [s for s in wanted if s not in recipe["stages"]]
    if unknown:
        raise SystemExit(f"stvsr train: recipe {args.recipe} has no stage {unknown[0]}: "
                         f"its stages are {','.join(map(str, sorted(recipe['stages'])))}")
    stages = {s: dataclasses.replace(recipe["stages"][s], steps=max(1, round(recipe["stages"][s].steps * args.steps_scale)))
              for s in wanted}
    for root in args.data:
        if "eval" in Path(root).resolve().parts:
            raise SystemExit(f"stvsr train: {root} looks like an evaluation set: never train on it")
    for spec in args.init:  # fail before the slow data loading
        if ":" not in spec or spec.rsplit(":", 1)[1] not in PARTS:
            raise SystemExit(f"stvsr train: --init {spec!r}: part must be M_S, M_T, F or R (FILE:PART)")
        if not Path(spec.rsplit(":", 1)[0]).is_file():
            raise SystemExit(f"stvsr train: --init {spec!r}: no such file")
    if args.teacher and 1 not in stages:
        raise SystemExit(f"stvsr train: --teacher distils M_S in stage 1, which this run does not train "
                         f"(stages {','.join(map(str, sorted(stages)))})")
    t0 = time.time()
    clips = load_clips(args.data, max_frames=args.max_frames, exclude=HELD_OUT_CLIPS)
    photos = load_photos(args.photos) if Path(args.photos).is_dir() else []
    if not clips:
        raise SystemExit(f"stvsr train: no clips found under {args.data}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    print(f"rank {rank}/{world}: {len(clips)} clips, {sum(len(c.valid) for c in clips)} triplets, {len(photos)} photos "
          f"({time.time() - t0:.0f} s)", flush=True)
    times = recipe.get("times", (0.5,))
    # each rank draws its own batches; a recipe's `gaps` widen the windows (larger motion)
    sampler = TripletSampler(clips, photos, seed=args.seed + rank, times=times, gaps=recipe.get("gaps", (1,)))
    model = DualStream(recipe["model"])
    load_pretrained(model)
    for spec in args.init:
        init_part(model, *spec.rsplit(":", 1))
    cache = recipe.get("stream_cache")
    if cache:  # frozen pretrained backbones: both streams computed once (stream_cache.py)
        from . import stream_cache
        from .precision import cpu_prefers_bf16
        sampler = TripletSampler(clips, photos, crop=cache["crop"], seed=args.seed, gaps=cache["gaps"],
                                 times=times)
        folder = stream_cache.build(model, sampler, Path(args.out) / "streams", args.cache_samples or cache["samples"],
                                    bf16=cpu_prefers_bf16())
        sampler = stream_cache.StreamSampler(folder, seed=args.seed + rank)
    if args.teacher:
        sampler = {s: sampler for s in stages} | {1: teacher_labels(args, recipe, model, clips, photos, rank)}
    model = train(model, sampler, args.out, stages, seed=args.seed)
    if rank == 0:
        info = {"recipe": args.recipe, "stages": {k: dataclasses.asdict(v) for k, v in stages.items()},
                **({"teacher": args.teacher} if args.teacher else {}),
                "times": [round(t, 4) for t in times],
                "data": [Path(d).name for d in args.data] + (["registry photos"] if photos else []),
                "train_seconds": round(time.time() - t0)}
        save_weights(model, Path(args.out) / "model.safetensors", training=json.dumps(info))
        print(f"wrote {Path(args.out) / 'model.safetensors'}", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


PARTS = ("M_S", "M_T", "F", "R")


def init_part(model: DualStream, path: str, part: str) -> None:
    """Copy one sub-network's tensors (M_S, M_T, F or R) from a weights file or a stage checkpoint,
    both safetensors: nothing is ever unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .checkpoint import is_checkpoint, model_state, read_checkpoint
    try:
        state = model_state(read_checkpoint(path)[0]) if is_checkpoint(path) else load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise SystemExit(f"stvsr train: --init {path}: not a safetensors weights file or stage checkpoint "
                         f"({str(e).splitlines()[0]}); convert .pt/.pth files to .safetensors first") from None
    sub = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
    try:
        getattr(model, part).load_state_dict(sub, strict=True)
    except RuntimeError as e:
        raise SystemExit(f"stvsr train: {path} has no {part} matching this recipe: {e}") from None
    print(f"{part} initialised from {path}", flush=True)


def teacher_labels(args, recipe: dict, model: DualStream, clips, photos, rank: int):
    """Stage 1's sampler: crops labelled once by the teacher's M_S (distill.py)."""
    from . import distill
    from .registry import load_model
    from .train import _stage1_parts
    from .weights import WeightsError
    parts = _stage1_parts(model, recipe["stages"][1].parts)
    if parts != ("M_S",):
        raise SystemExit(f"stvsr train: --teacher distils M_S only; recipe {args.recipe} trains {', '.join(parts) or 'nothing'} "
                         f"in stage 1")
    try:
        teacher = load_model(args.teacher).eval()
    except (WeightsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"stvsr train: --teacher {args.teacher}: {e}") from None
    if teacher.scale != model.scale:
        raise SystemExit(f"stvsr train: --teacher {args.teacher} upsamples {teacher.scale}x, recipe {args.recipe} "
                         f"{model.scale}x: pick a teacher of the same scale")
    cfg = recipe.get("distill", {})
    folder = Path(args.out) / "teacher_labels"
    if rank == 0:
        distill.build(teacher, TripletSampler(clips, photos, seed=args.seed), clips, photos, folder,
                      args.teacher_samples or cfg.get("samples", 4000), crop=cfg.get("crop", 64),
                      unlabelled=cfg.get("unlabelled", 0.5))
    if dist.is_initialized():
        dist.barrier()
    return distill.DistillSampler(folder, model.scale, seed=args.seed + rank)
