"""Weights files: safetensors with the architecture config in the metadata, so a file alone
rebuilds its model. Every way a file can be wrong gets an error naming the file and the fault."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .dual_stream import DualStream

FORMAT = "stvsr-dual-stream/1"
PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


class WeightsError(ValueError):
    """A weights file that cannot build or fill a DualStream model."""


class BackboneMissing(WeightsError):
    """The model needs pretrained backbone weights that are not installed (the fix is named)."""


def _own_state(model: DualStream) -> dict:
    """The tensors stvsr trained: everything but the pretrained backbones (never redistributed)."""
    skip = tuple(f"{part}." for part in model.pretrained_parts())
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def load_pretrained(model: DualStream) -> None:
    """Fill the pretrained parts (M_S = SPAN, M_T = RIFE, ...) from the backbone store."""
    from .backbones.store import BackboneMissingError, load_backbone
    for part, name in model.pretrained_parts().items():
        try:
            getattr(model, part).load_pretrained(load_backbone(name))
        except BackboneMissingError as e:
            raise BackboneMissing(str(e)) from None


def save_weights(model: DualStream, path: str | os.PathLike, **info: str) -> None:
    """Write `model` to `path`; extra `info` strings (description, training...) go in the metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in _own_state(model).items()}
    meta = {"format": FORMAT, "config": json.dumps(model.config, sort_keys=True)}
    if model.pretrained_parts():
        meta["backbones"] = json.dumps(model.pretrained_parts(), sort_keys=True)
    meta.update({k: str(v) for k, v in info.items()})
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_metadata(path: str | os.PathLike) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e}); re-download or re-export it") from None


def load_weights(path: str | os.PathLike, map_location: str = "cpu") -> DualStream:
    """Build the model described in the file's metadata and load its tensors strictly."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an stvsr weights file (metadata format is {meta.get('format')!r}, "
                           f"expected {FORMAT!r}); stvsr loads only files written by stvsr_core.save_weights")
    try:
        config = json.loads(meta["config"])
        model = DualStream(config)
    except (KeyError, ValueError, TypeError) as e:
        raise WeightsError(f"{path}: its architecture config is invalid: {e}") from None
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path}: tensors cannot be read ({e}); the file is truncated or corrupt") from None
    check_state(model, state, path)
    load_pretrained(model)
    model.load_state_dict(state, strict=False)  # strict over the file's own tensors: check_state
    model.eval()
    return model


def check_state(model: torch.nn.Module, state: dict, path) -> None:
    """Raise WeightsError listing missing, unexpected and mis-shaped tensors, and non-finite values."""
    own = _own_state(model)
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if shapes:
        problems.append("shape mismatches " + "; ".join(shapes[:5]))
    if bad:
        problems.append(f"NaN or infinite values in {bad[:5]}")
    if problems:
        raise WeightsError(f"{path}: does not match its architecture config: " + ", ".join(problems))
