"""ComfyUI's services, with plain fallbacks so the node classes also run (and are tested) without it."""
from __future__ import annotations

import logging
import os
import shutil

import torch

log = logging.getLogger("stvsr")

try:  # inside ComfyUI
    import comfy.model_management as mm
    import comfy.utils as cu
    import folder_paths
except ImportError:  # plain Python: CI and scripts
    mm = cu = folder_paths = None

FOLDER = "stvsr"


def register_model_folder() -> None:
    """Add (and create) ComfyUI/models/stvsr for .safetensors files, keeping paths from extra_model_paths.yaml."""
    if folder_paths is None:
        return
    path = os.path.join(folder_paths.models_dir, FOLDER)
    os.makedirs(path, exist_ok=True)
    folder_paths.add_model_folder_path(FOLDER, path, is_default=True)
    paths, exts = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | {".safetensors"})


def install_demo_clip() -> None:
    """Copy the bundled clip that the example workflows load into ComfyUI's input folder,
    unless a file of that name is already there (never overwritten)."""
    if folder_paths is None:
        return
    from ..stvsr_core.video_io import DEMO_CLIP
    dst = os.path.join(folder_paths.get_input_directory(), DEMO_CLIP.name)
    if os.path.exists(dst):
        return
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(DEMO_CLIP, dst)
        log.info("stvsr: copied the demo clip of the example workflows to %s", dst)
    except OSError as e:
        log.warning("stvsr: could not copy the demo clip to %s (%s): the example workflows need it there", dst, e)


def user_model_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER) if folder_paths is not None else []


def user_model_path(name: str) -> str | None:
    return folder_paths.get_full_path(FOLDER, name) if folder_paths is not None else None


def torch_device() -> torch.device:
    """ComfyUI's device (honours --cpu); otherwise CUDA, MPS, CPU."""
    if mm is not None:
        return mm.get_torch_device()
    from ..stvsr_core import select_device
    return select_device("auto")


def free_memory(nbytes: int, device: torch.device) -> None:
    if mm is not None:
        mm.free_memory(nbytes, device)


def soft_empty_cache() -> None:
    if mm is not None:
        mm.soft_empty_cache()


def check_interrupt() -> None:
    """Raises ComfyUI's interrupt exception when the user pressed Cancel."""
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


OOM_ERRORS = (mm.OOM_EXCEPTION,) if mm is not None else (torch.cuda.OutOfMemoryError,)


class Progress:
    """comfy.utils.ProgressBar with an interrupt check per step; a no-op outside ComfyUI."""

    def __init__(self, total: int):
        self.bar = cu.ProgressBar(total) if cu is not None else None

    def update(self, n: int = 1) -> None:
        check_interrupt()
        if self.bar is not None:
            self.bar.update(n)
