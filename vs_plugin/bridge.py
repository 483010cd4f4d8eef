"""What the C shim calls: hands `core.stvsr.Upsample`'s Python implementation to the shim.

The shim imports this module and calls `register()` whenever `core.stvsr.Upsample` is
called; `register` passes a Python callable to the shim's `Register` function, which the shim
then calls with the user's arguments (VapourSynth converts them both ways).
"""
from __future__ import annotations

import inspect

import vapoursynth as vs


def _upsample_from_shim(clip: vs.VideoNode, **kwargs) -> dict:
    from .filter import upsample
    known = list(inspect.signature(upsample).parameters)[1:]
    for key, value in kwargs.items():
        if key not in known:
            raise vs.Error(f"stvsr.Upsample: unknown argument {key!r}; it takes {', '.join(known)}")
        if isinstance(value, bytes):  # VapourSynth hands strings over as bytes
            kwargs[key] = value.decode()
    return {"clip": upsample(clip, **kwargs)}


def register() -> None:
    vs.core.stvsr.Register(func=_upsample_from_shim)
