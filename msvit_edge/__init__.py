"""msvit-edge: train, export and deploy MSViT (dynamic mixed-scale tokenization for ViTs).

The map, lowest layer first (each imports only from itself and the layers before it; docs/architecture.md): the
root's ``errors``, ``io`` and ``reporting``; ``machine`` (this machine, its backends, a Jetson's power); ``bundle``
(the torch-free bundle contract and engine folders); ``data`` (images); ``model`` (ViT, MSViT, checkpoints);
``training`` (the gBaS loss, train); ``engines`` (the pipelines that run bundles and engines); ``calibration``
(FP16/INT8 graphs); ``export`` (checkpoint to bundle); ``build`` (bundle to engine folder); ``measure`` (evaluate,
bench, reports); ``demo`` and ``cli`` on top.
"""

import logging

from msvit_edge.errors import MsvitEdgeError

logging.getLogger(__name__).addHandler(logging.NullHandler())  # quiet unless asked: msvit_edge.reporting.show

__version__ = "0.1.0"
__all__ = ["MsvitEdgeError", "__version__"]
