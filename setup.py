"""Builds the VapourSynth shim plugin into wheels (everything else is in pyproject.toml).

The shim lands in <site-packages>/vapoursynth/plugins/stvsr/, VapourSynth's autoload folder,
the way the vapoursynth-* plugin wheels install theirs. Without VapourSynth's headers (Python
< 3.12, or no vapoursynth wheel) the package installs without it and says so.
"""
import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

_spec = importlib.util.spec_from_file_location("_shim_build", Path(__file__).parent / "vs_plugin" / "shim" / "build.py")
shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shim)


class BuildWithShim(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs: use VAPOURSYNTH_EXTRA_PLUGIN_PATH (see README)
        try:
            path = shim.build(Path(self.build_lib) / "vapoursynth" / "plugins" / "stvsr")
            print(f"stvsr: built the VapourSynth plugin {path}", file=sys.stderr)
        except Exception as e:  # the package is still useful without VapourSynth
            print(f"stvsr: VapourSynth plugin not built ({e}); core.stvsr will not be available", file=sys.stderr)


class PlatformDistribution(Distribution):
    def has_ext_modules(self):  # the shim is native code: platform wheel, not a pure one
        return shim.vapoursynth_include() is not None


setup(cmdclass={"build_py": BuildWithShim}, distclass=PlatformDistribution)
