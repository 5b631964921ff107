"""``msvit-edge doctor``: what is installed, which backends and precisions that allows, and how to get the rest.

``diagnose()`` reads the environment (``msvit_edge.machine.environment``: package metadata, ``nvidia-smi``, the Jetson
files; nothing heavy is imported) and derives a ``Report``: each package with its version or the exact command
that installs it on this kind of machine, and a backend x precision matrix with the reason for every gap.
``format_report()`` renders it as plain text for the CLI; ``missing_backend_error()`` is the one-line error that
``build`` and ``bench`` raise when a backend is missing.

Precision graphs (FP16 AutoCast, INT8 Q/DQ) are made by ``msvit-edge build`` with ModelOpt, for every backend, and
PyTorch reads the calibration images; a machine without them (a Jetson) can still run graphs that a bundle already
carries (``build --graphs-only`` on a workstation). The matrix calls that state "graphs".
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.machine.environment import device_description, environment, has_nvidia_gpu

BACKENDS = ("onnxruntime", "torch", "tensorrt", "torch-tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
JETSON_INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"  # NVIDIA's Jetson AI Lab wheels for JetPack 6 (CUDA 12.6)

EXTRAS = {"torch": "torch", "nvidia-modelopt": "quantize", "tensorrt": "tensorrt", "torch-tensorrt": "torch-tensorrt"}
PURPOSES = {
    "numpy": "arrays, everywhere",
    "onnx": "reading and writing the graphs",
    "onnxruntime": "the onnxruntime backend; validates every build",
    "polygraphy": "builds and compares TensorRT engines",
    "torch": "train, eval, export; the torch backend; reads calibration images",
    "nvidia-modelopt": "makes FP16 and INT8 graphs",
    "tensorrt": "the tensorrt backend",
    "torch-tensorrt": "the torch-tensorrt backend",
    "jetson-stats": "power readings through jtop (else tegrastats)",
}


@dataclass(frozen=True)
class Package:
    name: str  # the distribution, as pip names it
    version: str | None  # None: not installed
    purpose: str
    install: str  # the command that installs it on this machine


@dataclass(frozen=True)
class Capability:
    backend: str
    precision: str
    status: str  # "yes"; "graphs": runs precision graphs a bundle already carries, cannot make them here; "no"
    reason: str  # why not "yes", with the command that fixes it ("" for yes)

    @property
    def available(self) -> bool:
        return self.status != "no"


@dataclass(frozen=True)
class Report:
    environment: dict
    packages: tuple[Package, ...]
    capabilities: tuple[Capability, ...]
    hints: tuple[str, ...]

    def capability(self, backend: str, precision: str) -> Capability:
        """The matrix cell for ``backend`` x ``precision``."""
        return next(c for c in self.capabilities if (c.backend, c.precision) == (backend, precision))

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "packages": [asdict(p) for p in self.packages],
            "capabilities": [asdict(c) for c in self.capabilities],
            "hints": list(self.hints),
        }


def install_command(dist: str, env: dict) -> str:
    """The command that installs ``dist`` on the machine ``env`` describes (a Jetson or not)."""
    jetson = env["jetson"] is not None
    jp6 = jetson and str(env["jetson"].get("jetpack") or "").startswith("6")
    index = f" --index-url {JETSON_INDEX}" if jp6 else " (from pypi.jetson-ai-lab.io for your JetPack)"
    if jetson and dist == "tensorrt":
        return "sudo apt install nvidia-tensorrt python3-libnvinfer (JetPack's; a venv needs --system-site-packages)"
    if jetson and dist in ("torch", "torch-tensorrt"):
        return f"pip install {dist}{index}"
    if jetson and dist == "onnxruntime-gpu":
        return f"pip install onnxruntime-gpu{index}"
    if dist == "onnxruntime-gpu":
        return "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"  # one of the two, never both
    if dist == "jetson-stats":
        return "sudo pip3 install -U jetson-stats (then reboot, or start the jtop service)"
    extras = {
        "torch": "torch",
        "nvidia-modelopt": "quantize",
        "tensorrt": "tensorrt",
        "torch-tensorrt": "torch-tensorrt",
    }
    # msvit-edge is not on a public index: its extras install from the clone (or the wheel built from it)
    return f'pip install ".[{extras[dist]}]" (in the msvit-edge clone)' if dist in extras else f"pip install {dist}"


def _packages(env: dict) -> tuple[Package, ...]:
    versions = env["packages"] | {"tensorrt": env["tensorrt"]}  # the apt-installed TensorRT has no pip metadata
    names = [n for n in PURPOSES if n != "jetson-stats" or env["jetson"] is not None]
    return tuple(Package(n, versions.get(n), PURPOSES[n], install_command(n, env)) for n in names)


def _missing(env: dict, dist: str) -> str:
    return f"{dist} is not installed: {install_command(dist, env)}"


def _graph_makers(env: dict, precision: str) -> list[str]:
    """What making ``precision`` graphs needs that ``env`` lacks ([] for fp32 or when all is there): what ``build``
    needs (``msvit_edge.build._can_make_graphs``), ModelOpt and PyTorch, for every backend."""
    have = env["packages"]
    needs = [] if precision == "fp32" else ["nvidia-modelopt", "torch"]
    return [_missing(env, d) for d in needs if not have.get(d)]


def _cell(backend: str, precision: str, blockers: list[str], makers: list[str]) -> Capability:
    if blockers:
        return Capability(backend, precision, "no", "; ".join(blockers))
    if makers:
        return Capability(backend, precision, "graphs", "making the graphs here needs: " + "; ".join(makers))
    return Capability(backend, precision, "yes", "")


def _onnxruntime(env: dict, precision: str, gpu: bool) -> Capability:
    blockers = [] if env["onnxruntime_providers"] else [_missing(env, "onnxruntime")]
    return _cell("onnxruntime", precision, blockers, _graph_makers(env, precision))


def _tensorrt(env: dict, precision: str, gpu: bool) -> Capability:
    blockers = [] if env["tensorrt"] else [_missing(env, "tensorrt")]
    blockers += [] if gpu else ["no NVIDIA GPU (nvidia-smi lists none, not a Jetson, no /dev/nvidia0)"]
    return _cell("tensorrt", precision, blockers, _graph_makers(env, precision))


def _torch(env: dict, precision: str, gpu: bool) -> Capability:
    blockers = [] if env["packages"]["torch"] else [_missing(env, "torch")]
    if precision == "fp16" and not (gpu and env["torch_cuda"]):
        blockers.append("msvit-edge runs PyTorch FP16 on CUDA only: needs a CUDA build of torch and an NVIDIA GPU")
    if precision == "int8":
        blockers.append("msvit-edge has no PyTorch INT8 path: use tensorrt or onnxruntime int8")
    return _cell("torch", precision, blockers, [])


def _torch_tensorrt(env: dict, precision: str, gpu: bool) -> Capability:
    have = env["packages"]
    blockers = [_missing(env, d) for d in ("torch", "torch-tensorrt") if not have[d]]
    blockers += [] if gpu and env["torch_cuda"] else ["needs a CUDA build of torch and an NVIDIA GPU"]
    if precision != "fp32":
        blockers.append("msvit-edge compiles torch-tensorrt in FP32 only: use tensorrt for fp16 and int8")
    return _cell("torch-tensorrt", precision, blockers, [])


RULES = {"onnxruntime": _onnxruntime, "torch": _torch, "tensorrt": _tensorrt, "torch-tensorrt": _torch_tensorrt}


def _hints(env: dict, gpu: bool) -> list[str]:
    hints = []
    providers = env["onnxruntime_providers"] or []
    if gpu and providers and "CUDAExecutionProvider" not in providers:
        hints.append(f"ONNX Runtime runs on the CPU only here; for the GPU: {install_command('onnxruntime-gpu', env)}")
    if gpu and env["packages"]["torch"] and not env["torch_cuda"]:
        hints.append("torch is a CPU build; for the GPU install a CUDA build of torch")
    if env["jetson"] is not None:
        hints += env["jetson"]["notes"]
    return hints


def diagnose(env: dict | None = None, root: Path = Path("/")) -> Report:
    """What this machine can build and run.

    Args:
        env: An ``environment()``; measured now when omitted.
        root: Filesystem root for the GPU device node.
    """
    env = env if env is not None else environment()
    gpu = has_nvidia_gpu(env, root)
    cells = tuple(RULES[b](env, p, gpu) for b in BACKENDS for p in PRECISIONS)
    return Report(env, _packages(env), cells, tuple(_hints(env, gpu)))


def missing_backend_error(backend: str, precision: str | None = None, report: Report | None = None) -> MsvitEdgeError:
    """The one-line error for a backend (or backend and precision) that cannot run here, pointing to the fix."""
    if backend not in BACKENDS:
        return MsvitEdgeError(f"unknown backend {backend!r}: the backends are {', '.join(BACKENDS)}")
    report = report or diagnose()
    cells = [report.capability(backend, p) for p in ([precision] if precision else PRECISIONS)]
    what = f"{backend} {precision}" if precision else backend
    reason = next((c.reason for c in cells if c.status == "no"), None)
    if reason is None:  # the caller failed to load what the metadata says is installed
        return MsvitEdgeError(f"backend {what} failed to load although it looks installed (see `msvit-edge doctor`)")
    return MsvitEdgeError(f"backend {what} is not available here: {reason} (see `msvit-edge doctor`)")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


NO_SHARED_LIBPYTHON = (
    "this Python ({python}) has no shared libpython, which Triton's python backend embeds: use a Python built with "
    "--enable-shared (Debian's python3, or pyenv with PYTHON_CONFIGURE_OPTS=--enable-shared)"
)


def serving_line(facts: dict | None) -> str:
    """``serve`` here: ready, or what it lacks and how to get it."""
    if not facts:
        return "not checked"
    if not facts["shared_libpython"]:
        return NO_SHARED_LIBPYTHON.format(python=sys.executable)
    if not facts["tritonserver"]:
        return "no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (or serve --tritonserver PATH)"
    return "ready (tritonserver from nvidia-pytriton; this Python embeds: shared libpython)"


def format_report(report: Report) -> str:
    """Plain text for the terminal: device, packages, providers, the matrix, the reasons and hints."""
    env = report.environment
    lines = [f"msvit-edge {env['msvit_edge']} doctor: {device_description(env)}", "", "Packages"]
    lines += _table([[p.name, p.version or "missing", p.purpose if p.version else p.install] for p in report.packages])
    lines += ["", f"ONNX Runtime providers: {', '.join(env['onnxruntime_providers'] or ['none'])}"]
    lines += [f"CPU int8 kernels: {int8_line(env['cpu'].get('int8'))}"]
    lines += [f"Triton serving: {serving_line(env.get('serving'))}"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver_version']})" for g in env["gpus"])
    lines += [f"GPU: {gpus or 'none found by nvidia-smi'}", f"torch CUDA: {env['torch_cuda'] or 'none (CPU build)'}"]
    matrix = [[b, *(report.capability(b, p).status for p in PRECISIONS)] for b in BACKENDS]
    lines += ["", "Backends", *_table([["", *PRECISIONS], *matrix])]
    lines += ["  graphs: runs FP16/INT8 graphs a bundle already carries (build --graphs-only elsewhere)"]
    lines += ["", "Why not", *_reasons(report)] if any(c.reason for c in report.capabilities) else []
    lines += ["", "Hints", *(f"  {h}" for h in report.hints)] if report.hints else []
    return "\n".join(lines)


def int8_line(int8: dict | None) -> str:
    """What ONNX Runtime's int8 kernels do on this CPU, and what msvit-edge's INT8 graphs do about it."""
    if int8 is None:
        return "unknown (an environment recorded before msvit-edge read them)"
    if int8["u8s8_saturates"]:
        return (
            f"{int8['kernels']} without VNNI: 8-bit products are paired in 16 bits and saturate with int8 weights; "
            "msvit-edge's ONNX Runtime INT8 graphs are uint8 (U8U8 kernels), exact here"
        )
    return f"{int8['kernels']}: no saturation; msvit-edge's ONNX Runtime INT8 graphs are uint8 all the same"


def _reasons(report: Report) -> list[str]:
    """One line per backend and reason, listing the precisions it applies to."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for c in report.capabilities:
        if c.reason:
            grouped.setdefault((c.backend, c.reason), []).append(c.precision)
    return [f"  {backend} {'/'.join(precs)}: {reason}" for (backend, reason), precs in grouped.items()]
