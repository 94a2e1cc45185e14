"""The prompted Contour Proposal Network: network, contours, NMS, prompts, model files and the predictor."""

from pathlib import Path

#: The model shipped inside the package (here, so that finding it imports no torch).
DEFAULT_MODEL = Path(__file__).with_name("default_model.pt")
