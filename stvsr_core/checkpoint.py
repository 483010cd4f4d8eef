"""Training checkpoints as safetensors: tensors (model, optimiser moments, torch RNG) in the file,
everything else (step, schedule, optimiser hyper-parameters, numpy RNG) as JSON in its metadata.

No pickle: a checkpoint from the internet cannot run code when it is resumed or used by `--init`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "stvsr-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a readable stvsr training checkpoint."""


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def _rng_from(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched, step: int,
                    sampler_rng: np.random.Generator) -> None:
    """Write atomically (a temporary file, then rename): a killed run never leaves half a checkpoint."""
    tensors = {f"model/{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    scalars = {}
    for index, state in opt_state["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt/{index}/{name}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{index}/{name}"] = value
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {"step": step, "sched": sched.state_dict(), "param_groups": opt_state["param_groups"],
            "opt_scalars": scalars, "sampler_rng": _rng_state(sampler_rng)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "state": json.dumps(meta)})
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(tensors by key, the JSON state); a file that is not a checkpoint gets one clear error."""
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not an stvsr training checkpoint ({FORMAT})")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e}); delete it to restart the stage") from None
    return tensors, json.loads(meta["state"])


def model_state(tensors: dict) -> dict:
    return {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}


def is_checkpoint(path: str | Path) -> bool:
    try:
        with safe_open(str(path), "pt") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def load_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched) -> tuple[int, np.random.Generator]:
    """Restore model, optimiser, schedule and torch RNG; returns (step, the sampler's numpy RNG)."""
    tensors, meta = read_checkpoint(path)
    model.load_state_dict(model_state(tensors))
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["opt_scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    sched.load_state_dict(meta["sched"])
    torch.set_rng_state(tensors["rng/torch"])
    return meta["step"], _rng_from(meta["sampler_rng"])
