"""Calibration data and precision passes (FP16 AutoCast, INT8 Q/DQ) for export bundles.

``precision_graphs`` is the one entry point ``msvit-edge build`` calls; ``cache_key`` names its cache entries.
ModelOpt, ONNX Runtime's quantizer and PyTorch are imported only where they are used.
"""

from msvit_edge.calibration.precision import PrecisionGraphs, cache_key, precision_graphs, settings_for
from msvit_edge.calibration.tokens import MIN_IMAGES, check_images, encoder_feeds

__all__ = [
    "MIN_IMAGES",
    "PrecisionGraphs",
    "cache_key",
    "check_images",
    "encoder_feeds",
    "precision_graphs",
    "settings_for",
]
