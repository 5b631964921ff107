"""msvit-edge: train, export and deploy MSViT (dynamic mixed-scale tokenization for ViTs)."""

from msvit_edge.errors import MsvitEdgeError

__version__ = "0.1.0"
__all__ = ["MsvitEdgeError", "__version__"]
