"""ComfyUI entry point: clone this repository into ComfyUI/custom_nodes and restart ComfyUI.

Only ComfyUI imports this file (the pip package is `stvsr_core`); it exports the node mappings
and ComfyUI serves its example_workflows/ folder to the template browser.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
