"""Compile the C shim (stvsr_shim.c) into a VapourSynth plugin library.

Used by setup.py for wheels (which install it into VapourSynth's autoload folder) and by the
tests and developers (`python -m vs_plugin.shim.build DIR`, then VAPOURSYNTH_EXTRA_PLUGIN_PATH=DIR).
Plain file paths only, so setup.py can run it before anything is installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("stvsr_shim.c")
LIBRARY = "libstvsr.so" if sys.platform != "darwin" else "libstvsr.dylib"


def vapoursynth_include() -> Path | None:
    """The C headers shipped in the vapoursynth wheel, or None when it is not installed."""
    try:
        import vapoursynth  # noqa: F401  (R81+ wheels bundle the headers)
    except ImportError:
        return None
    import importlib.util
    spec = importlib.util.find_spec("vapoursynth")
    for base in spec.submodule_search_locations or [os.path.dirname(spec.origin)]:
        inc = Path(base) / "include"
        if (inc / "VapourSynth4.h").is_file():
            return inc
    return None


def build(out_dir: str | os.PathLike, include: str | os.PathLike | None = None) -> Path:
    """Compile the shim into out_dir/<LIBRARY> and return its path."""
    include = Path(include) if include else vapoursynth_include()
    if include is None:
        raise RuntimeError("VapourSynth's C headers were not found: pip install 'vapoursynth>=70' (Python >= 3.12)")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc or clang): install one, e.g. apt-get install gcc")
    out = Path(out_dir) / LIBRARY
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-O2", "-shared", "-fPIC", "-Wall", f"-I{include}", str(SOURCE), "-o", str(out)]
    if sys.platform.startswith("linux"):
        cmd.append("-ldl")
    subprocess.run(cmd, check=True)
    return out


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "."))
