"""What the C shim runs for every `core.stvsr.Upsample(...)` call: `run(**arguments)`.

The shim passes the user's arguments other than the clip. Clips pass between Python and a
plugin only through plugin calls, so `run()` calls `core.stvsr.Upsample` twice on the shim's
thread while the user's call waits in the shim: the first call returns the user's clip, the
second hands the finished clip back. Whatever `run()` raises reaches the user as one line,
`str(exception)`, never a traceback.
"""
from __future__ import annotations

import sys
import traceback

import vapoursynth as vs


def run(**arguments) -> None:
    core = vs.core
    clip = core.stvsr.Upsample(core.std.BlankClip(length=1))  # the user's clip
    arguments = {k: v.decode() if isinstance(v, bytes) else v for k, v in arguments.items()}
    try:
        from .filter import upsample
    except ImportError as e:
        raise vs.Error(f"stvsr.Upsample: cannot import its Python implementation ({e}): "
                       "pip install 'stvsr[vapoursynth]' into the Python that VapourSynth uses") from None
    try:
        out = upsample(clip, **arguments)
    except vs.Error:
        raise
    except Exception as e:  # a bug: the message to the user, the traceback to stderr for the report
        traceback.print_exc(file=sys.stderr)
        raise vs.Error(f"stvsr.Upsample: internal error ({type(e).__name__}: {e}); "
                       "please report it with the traceback printed above") from None
    core.stvsr.Upsample(out)  # hands the result to the shim
