"""Hardware markers: tests marked gpu / tensorrt / jetson run where that hardware exists and skip, saying why,
elsewhere (such as the 2-core CPU machines CI runs on)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


def _missing() -> dict[str, str | None]:
    import torch

    return {
        "gpu": None if torch.cuda.is_available() else "needs a CUDA GPU (torch.cuda.is_available() is False here)",
        "tensorrt": None if importlib.util.find_spec("tensorrt") else "needs TensorRT (the tensorrt package is absent)",
        "jetson": None
        if Path("/etc/nv_tegra_release").exists() or shutil.which("tegrastats")
        else "needs a Jetson (no /etc/nv_tegra_release, no tegrastats)",
    }


def pytest_collection_modifyitems(config, items):
    missing = None
    for item in items:
        for marker in ("tensorrt", "gpu", "jetson"):  # the most specific reason first
            if marker in item.keywords:
                missing = missing or _missing()
                if missing[marker]:
                    item.add_marker(pytest.mark.skip(reason=missing[marker]))
