"""The model a configuration describes: its task picks the class (``MSViT`` or ``MSViTSegmenter``)."""

from __future__ import annotations

from msvit_edge.model.config import SEGMENTATION, GateTraining, MSViTConfig
from msvit_edge.model.msvit import MSViT
from msvit_edge.model.segmenter import MSViTSegmenter


def create_model(config: MSViTConfig, gate_training: GateTraining | None = None) -> MSViT:
    """A freshly initialised model of ``config``'s task; ``gate_training`` as for ``MSViT``."""
    cls = MSViTSegmenter if config.task == SEGMENTATION else MSViT
    return cls(config, gate_training)
