"""Serving through NVIDIA Triton Inference Server: the layer above ``measure`` (nothing imports it).

``triton_repo`` writes a model repository for an engine folder (``repository``), ``serve`` runs a real
``tritonserver`` on it (``server``), ``loadtest`` measures a running server with tritonclient (``loadtest``).
``models`` holds the python-backend models the repository's ``model.py`` files import inside Triton.
"""

from msvit_edge.serve.repository import Repository, triton_repo
from msvit_edge.serve.server import Ports, TritonServer, serve

__all__ = ["Ports", "Repository", "TritonServer", "serve", "triton_repo"]
