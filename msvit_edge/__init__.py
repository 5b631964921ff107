"""msvit-edge: train, export and deploy MSViT (dynamic mixed-scale tokenization for ViTs)."""

import logging

from msvit_edge.errors import MsvitEdgeError

logging.getLogger(__name__).addHandler(logging.NullHandler())  # quiet unless asked: msvit_edge.reporting.show

__version__ = "0.1.0"
__all__ = ["MsvitEdgeError", "__version__"]
