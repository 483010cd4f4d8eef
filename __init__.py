"""ComfyUI entry point: clone this repository into ComfyUI/custom_nodes and restart ComfyUI.

ComfyUI imports this file as a package (the pip package is `stvsr_core`); it exports the node mappings
and ComfyUI serves its example_workflows/ folder to the template browser.
"""
if __package__:  # ComfyUI imports this folder as a package; pytest may import the bare file (any clone name)
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
