"""ComfyUI node pack of stvsr (loaded through the repository root's __init__.py)."""
from .host import install_demo_clip, register_model_folder
from .stvsr_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

register_model_folder()
install_demo_clip()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
