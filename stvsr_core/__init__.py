"""stvsr_core: spatiotemporal video super-resolution with the Dual-Stream Fusion Network.

Pure PyTorch; the ComfyUI nodes and the VapourSynth filter are thin adapters over this API.
"""
from .dual_stream import DEFAULT_CONFIG, DualStream, Middle, Outputs
from .engine import Engine, EngineOptions, InputError, select_device
from .registry import DEFAULT_MODEL, describe_model, list_models, load_model, resolve_model
from .scenecut import DEFAULT_THRESHOLD, scene_score
from .weights import WeightsError, load_weights, save_weights

__version__ = "0.1.0"
__all__ = [
    "DEFAULT_CONFIG", "DEFAULT_MODEL", "DEFAULT_THRESHOLD", "DualStream", "Engine", "EngineOptions",
    "InputError", "Middle", "Outputs", "WeightsError", "describe_model", "list_models", "load_model",
    "load_weights", "resolve_model", "save_weights", "scene_score", "select_device",
]
