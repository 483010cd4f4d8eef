"""ComfyUI node pack of stvsr (loaded through the repository root's __init__.py)."""
from .host import register_model_folder
from .stvsr_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
