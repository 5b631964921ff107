"""The environment every report records: OS, Python, package versions, CPU, GPU and driver, TensorRT, Jetson.

Cheap by design, so that every command can afford it: versions come from package metadata, or from a module's own
source when there is none (JetPack's apt-installed TensorRT), never by importing torch or TensorRT; GPUs come from
``nvidia-smi``; the Jetson part from ``msvit_edge.machine.jetson.detect``. Keys are stable and every value is
JSON-serialisable, so two reports diff cleanly.

``device_slug()`` names the device for directories of engines built on it; engines also depend on the TensorRT
version (``environment()["tensorrt"]``), which a caller keys separately.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
import sysconfig
from functools import cache
from pathlib import Path

from msvit_edge import __version__
from msvit_edge.machine.jetson import JetsonInfo, Run, detect, run_command

# Distribution names as pip knows them; a value is None when the distribution is not installed.
PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "polygraphy",
    "torch",
    "onnxscript",
    "nvidia-modelopt",
    "tensorrt",
    "torch-tensorrt",
    "jetson-stats",
)
TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")  # pip's names across CUDA majors
GPU_QUERY = ("name", "driver_version", "compute_cap", "memory.total")


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, from its metadata (msvit-edge's own: this checkout's); None when it is not
    installed."""
    if dist == "msvit-edge":
        return __version__
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_version(module: str) -> str | None:
    """``__version__`` as written in a module's ``__init__.py``, read without importing the module.

    For packages installed without pip metadata, such as TensorRT's Python bindings from JetPack's apt packages.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", Path(spec.origin).read_text(errors="replace"), re.MULTILINE)
    return m.group(1) if m else None


def tensorrt_version() -> str | None:
    """TensorRT's version: from pip metadata (any CUDA flavour), else from the ``tensorrt`` module's source."""
    return next((v for d in TENSORRT_DISTS if (v := package_version(d))), None) or module_version("tensorrt")


def torch_cuda() -> str | None:
    """The CUDA version torch was built with (None: a CPU build, or no torch), without importing torch."""
    if "torch" in sys.modules:  # already paid for; None where an import of torch was blocked
        return None if sys.modules["torch"] is None else sys.modules["torch"].version.cuda
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_py = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    m = re.search(r"^cuda\b[^=]*=\s*[\"']([^\"']+)[\"']", _text(version_py), re.MULTILINE)
    return m.group(1) if m else None


def ort_providers() -> list[str] | None:
    """ONNX Runtime's available execution providers; None without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime  # light: a shared library and a few Python modules

    return list(onnxruntime.get_available_providers())


def gpus(run: Run = run_command) -> list[dict]:
    """CUDA GPUs from ``nvidia-smi``: name, driver, compute capability ("9.0") and memory in MiB; [] without it."""
    fields = list(GPU_QUERY)
    status, out = run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if status != 0 and "compute_cap" in out:  # drivers before compute_cap was a query field
        fields.remove("compute_cap")
        status, out = run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    if status != 0:
        return []
    rows = [row.split(",") for row in out.strip().splitlines()]
    rows = [row for row in rows if len(row) == len(fields)]  # not a warning line
    return [dict.fromkeys(GPU_QUERY) | dict(zip(fields, map(_na, row), strict=True)) for row in rows]


def _na(value: str) -> str | int | None:
    value = value.strip()
    if value in ("", "[N/A]", "N/A", "[Not Supported]"):  # Jetson's nvidia-smi answers [N/A] for memory
        return None
    return int(value) if value.isdigit() else value


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def cpu(root: Path = Path("/")) -> dict:
    """CPU model (from /proc/cpuinfo), logical core count, architecture and int8 kernels (``int8_kernels``)."""
    info = _text(root / "proc/cpuinfo")
    model = re.search(r"^(?:model name|Hardware|Model)\s*:\s*(.+)$", info, re.MULTILINE)
    name = model.group(1).strip() if model else platform.processor() or platform.machine()
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", info, re.MULTILINE)
    int8 = int8_kernels(set(flags.group(1).split()) if flags else set())
    return {"model": name, "cores": os.cpu_count(), "arch": platform.machine(), "int8": int8}


# The instruction sets ONNX Runtime's int8 GEMMs (MLAS) pick, best first, by /proc/cpuinfo flag (x86 "flags", Arm
# "Features"), and whether 8-bit products there are added in 16 bits with saturation (VPMADDUBSW, x86 without VNNI).
INT8_KERNELS = (
    ("amx_int8", "amx", False),
    ("avx512_vnni", "avx512-vnni", False),
    ("avx_vnni", "avx-vnni", False),
    ("avx512bw", "avx512bw", True),
    ("avx2", "avx2", True),
    ("i8mm", "arm-i8mm", False),
    ("asimddp", "arm-dotprod", False),
)


def int8_kernels(flags: set[str]) -> dict:
    """Which int8 kernels ONNX Runtime runs on a CPU with these flags, and whether they saturate with full-range int8
    weights (U8S8 on x86 without VNNI); msvit-edge's ONNX Runtime INT8 graphs are uint8, safe on all of them."""
    for flag, name, saturates in INT8_KERNELS:
        if flag in flags:
            return {"kernels": name, "u8s8_saturates": saturates}
    return {"kernels": "generic", "u8s8_saturates": False}


def os_info(root: Path = Path("/")) -> dict:
    """Operating system, distribution (/etc/os-release) and kernel."""
    distro = re.search(r'^PRETTY_NAME="?([^"\n]+)', _text(root / "etc/os-release"), re.MULTILINE)
    return {
        "system": platform.system(),
        "distro": distro.group(1) if distro else None,
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def pytriton_server() -> Path | None:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton wheel (found, not imported: it pins numpy<2)."""
    spec = importlib.util.find_spec("pytriton")
    folder = None if spec is None or spec.origin is None else Path(spec.origin).parent / "tritonserver"
    return folder if folder is not None and (folder / "bin" / "tritonserver").is_file() else None


def shared_libpython() -> Path | None:
    """This Python's LIBDIR where it holds a shared libpython (what Triton's python backend stub embeds), else None."""
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    return libdir if sysconfig.get_config_var("Py_ENABLE_SHARED") and (libdir / library).is_file() else None


def serving() -> dict:
    """What ``serve`` needs here: nvidia-pytriton's tritonserver and a Python its python backend can embed."""
    server, libdir = pytriton_server(), shared_libpython()
    return {"tritonserver": None if server is None else str(server), "shared_libpython": libdir is not None}


def environment(root: Path = Path("/"), run: Run = run_command) -> dict:
    """Everything a report records about the machine; stable keys, JSON-serialisable values.

    Args:
        root: Filesystem root for /proc, /etc and the Jetson files (tests point it at a fake tree).
        run: Command runner for ``nvidia-smi``, ``nvpmodel`` and ``jetson_clocks``.
    """
    jetson = detect(root, run)
    return {
        "msvit_edge": __version__,
        "os": os_info(root),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "packages": {d: package_version(d) for d in PACKAGES},
        "onnxruntime_providers": ort_providers(),
        "torch_cuda": torch_cuda(),
        "tensorrt": tensorrt_version(),
        "cpu": cpu(root),
        "gpus": gpus(run),
        "jetson": jetson.to_dict() if jetson else None,
        "serving": serving(),
    }


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


def device_slug(env: dict | None = None) -> str:
    """A short, stable name for the device, for directories of engines built on it.

    "jetson-agx-orin-developer-kit" on a Jetson (its device-tree model), "cuda-sm90-h200" with a CUDA GPU (the
    first one: engines are built on device 0), "cpu-x86_64-1a2b3c4d" otherwise (a hash of the CPU model).

    Args:
        env: An ``environment()``; measured now when omitted.
    """
    env = env if env is not None else environment()
    if env["jetson"]:
        return "jetson-" + _slug(re.sub(r"^(NVIDIA\s+)?(Jetson\s+)?", "", env["jetson"]["model"]))
    if env["gpus"]:
        gpu = env["gpus"][0]
        sm = f"sm{gpu['compute_cap'].replace('.', '')}-" if gpu["compute_cap"] else ""
        return f"cuda-{sm}" + _slug(re.sub(r"^NVIDIA\s+", "", gpu["name"] or "gpu"))
    digest = hashlib.sha256(env["cpu"]["model"].encode()).hexdigest()[:8]
    return f"cpu-{_slug(env['cpu']['arch'] or 'unknown')}-{digest}"


@cache
def this_machine() -> dict:
    """``environment()`` of this machine, measured once per process (it runs nvidia-smi, nvpmodel, ...)."""
    return environment()


def this_device() -> str:
    """``device_slug()`` of this machine."""
    return device_slug(this_machine())


def has_nvidia_gpu(env: dict | None = None, root: Path = Path("/")) -> bool:
    """Whether an NVIDIA GPU is visible: nvidia-smi lists one, this is a Jetson, or /dev/nvidia0 exists."""
    env = env if env is not None else this_machine()
    return bool(env["gpus"]) or env["jetson"] is not None or (root / "dev/nvidia0").exists()


def device_description(env: dict | None = None) -> str:
    """One human line: the Jetson and its setup, or the GPU and driver, or the CPU."""
    env = env if env is not None else environment()
    trt = f"; TensorRT {env['tensorrt']}" if env["tensorrt"] else ""
    if env["jetson"]:
        return JetsonInfo.from_dict(env["jetson"]).describe() + trt
    if env["gpus"]:
        g = env["gpus"][0]
        cc = f"compute {g['compute_cap']}, " if g["compute_cap"] else ""
        more = f" (+{len(env['gpus']) - 1} more)" if len(env["gpus"]) > 1 else ""
        return f"{g['name']} ({cc}driver {g['driver_version']}){more}{trt}"
    c = env["cpu"]
    return f"CPU only: {c['model']} ({c['cores']} logical cores, {c['arch']}){trt}"


def backend_version(backend: str) -> str | None:
    """The installed version (TensorRT's from its module: JetPack's system TensorRT has no pip metadata)."""
    return tensorrt_version() if backend == "tensorrt" else package_version(backend)
