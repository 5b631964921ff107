"""The TensorRT boundary: the one lazy import of TensorRT, what it can do, and what it raises, as one line.

The lowest of the TensorRT modules: every other one imports from here, none is imported back. ``import_tensorrt``
is the only place that imports TensorRT (it exists only on GPU machines and Jetsons); ``capabilities`` probes its
features (never its version string); ``tensorrt_errors`` turns whatever TensorRT or Polygraphy raise into one
``MsvitEdgeError`` line that names both versions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from msvit_edge.errors import MsvitEdgeError, first_line
from msvit_edge.machine.environment import package_version, tensorrt_version

INSTALL_HINT = (
    "pip install '.[tensorrt]' in the msvit-edge clone on x86 with CUDA, or use JetPack's system TensorRT "
    "(python3-libnvinfer) on a Jetson; run msvit-edge doctor"
)
POLYGRAPHY_MIN = "0.53.4"  # pyproject.toml's floor: the first Polygraphy that works with TensorRT 11


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a one-line error that says how to install it."""
    try:
        import tensorrt as trt  # lazy: TensorRT exists only on GPU machines and Jetsons
    except ImportError as e:  # also a bindings wheel whose libnvinfer is missing
        raise MsvitEdgeError(f"this needs TensorRT >= 10.1 ({e}): {INSTALL_HINT}") from None
    return trt


def capabilities(trt: ModuleType) -> dict:
    """What this TensorRT can do, by feature probe (never by version string).

    ``strongly_typed``: networks take their precision from the graph (10.x opt-in, 11.x always).
    ``precision_flags``: ``BuilderFlag.FP16``/``INT8`` exist (10.x; removed in 11.x).
    ``device_memory_v2``: ``ICudaEngine.device_memory_size_v2`` (the only spelling in 11.x).
    """
    return {
        "version": trt.__version__,
        "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        "precision_flags": hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8"),
        "device_memory_v2": hasattr(trt.ICudaEngine, "device_memory_size_v2"),
    }


def family(caps: dict) -> str:
    """``"10"`` where the 10.x precision flags exist, else ``"11"``: which trtexec flags apply."""
    return "10" if caps["precision_flags"] else "11"


@contextmanager
def tensorrt_errors(what: str, path: Path | None = None) -> Iterator[None]:
    """Whatever TensorRT or Polygraphy raises in the block, as one ``MsvitEdgeError`` line: ``what`` failed, why, and
    the TensorRT and Polygraphy versions.

    They raise many types (PolygraphyException, RuntimeError, TypeError; AttributeError where a version lacks an
    API), and none is actionable without the versions: a Polygraphy older than TensorRT 11 fails deep inside.
    """
    try:
        yield
    except MsvitEdgeError:
        raise
    except Exception as e:  # the boundary: everything below it is TensorRT's or Polygraphy's
        raise MsvitEdgeError(f"{what}: {first_line(e)} ({versions()})", path) from e


def versions() -> str:
    """The installed TensorRT and Polygraphy versions, and the upgrade command where Polygraphy is below the floor."""
    trt_version, polygraphy = tensorrt_version(), package_version("polygraphy")
    text = f"TensorRT {trt_version or 'not found'}, Polygraphy {polygraphy or 'not found'}"
    if polygraphy and _release(polygraphy) < _release(POLYGRAPHY_MIN):
        text += f"; msvit-edge needs Polygraphy >= {POLYGRAPHY_MIN}: pip install -U 'polygraphy>={POLYGRAPHY_MIN}'"
    return text


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])
