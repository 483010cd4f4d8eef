"""Named models shipped inside the package (stvsr_core/weights/*.safetensors)."""
from __future__ import annotations

import os
from pathlib import Path

from .dual_stream import DualStream
from .weights import PACKAGE_WEIGHTS, WeightsError, load_weights, read_metadata

DEFAULT_MODEL = "stvsr-fast-v2"


def list_models() -> list[str]:
    """Names of the shipped models; 'default' is an alias of DEFAULT_MODEL."""
    return sorted(p.stem for p in PACKAGE_WEIGHTS.glob("*.safetensors"))


def resolve_model(name_or_path: str | os.PathLike = "default") -> Path:
    """A shipped model's name (or 'default') or a path to a .safetensors file -> its path."""
    name = str(name_or_path)
    if name == "default":
        name = DEFAULT_MODEL
    shipped = PACKAGE_WEIGHTS / f"{name}.safetensors"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = ", ".join(list_models()) or "none shipped in this install"
    raise WeightsError(f"model {name!r} is neither a shipped model ({known}) nor an existing .safetensors file")


def load_model(name_or_path: str | os.PathLike = "default") -> DualStream:
    return load_weights(resolve_model(name_or_path))


def describe_model(name_or_path: str | os.PathLike = "default") -> dict:
    return read_metadata(resolve_model(name_or_path))
