"""promptseg: prompted nucleus and cell segmentation for whole-slide images and microscopy stacks."""

__version__ = "0.1.0"
