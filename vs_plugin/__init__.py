"""VapourSynth host of stvsr: `core.stvsr.Upsample(clip, ...)` (through the C shim plugin) or,
without the plugin, `from vs_plugin import upsample; upsample(clip, ...)`."""


def __getattr__(name):  # lazy: the shim's build helper must import without VapourSynth or torch
    if name == "upsample":
        from .filter import upsample
        return upsample
    raise AttributeError(name)


__all__ = ["upsample"]
