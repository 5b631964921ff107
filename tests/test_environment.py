"""msvit_edge.environment: complete, JSON-serialisable, cheap (no torch or TensorRT import), stable device names."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from msvit_edge import __version__
from msvit_edge.environment import (
    PACKAGES,
    device_description,
    device_slug,
    environment,
    gpus,
    module_version,
    torch_cuda,
)

H200 = {"name": "NVIDIA H200", "driver_version": "570.124.06", "compute_cap": "9.0", "memory.total": 143771}
KEYS = {"msvit_edge", "os", "python", "packages", "onnxruntime_providers", "torch_cuda", "tensorrt", "cpu", "gpus"}


def test_environment_is_complete_and_json_serialisable():
    env = environment()
    assert set(env) == KEYS | {"jetson"}
    assert env["msvit_edge"] == __version__ and set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]
    assert env["cpu"]["cores"] >= 1 and env["os"]["kernel"]
    assert json.loads(json.dumps(env)) == env


def test_environment_imports_neither_torch_nor_tensorrt():
    code = (
        "import sys; from msvit_edge.environment import environment; environment(); "
        "print(sorted(m for m in ('torch', 'tensorrt') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_torch_cuda_read_from_source_matches_the_import():
    pytest.importorskip("torch")
    code = "import torch; print(torch.version.cuda)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert str(torch_cuda()) == imported


def test_module_version_without_import(tmp_path, monkeypatch):
    # the layout of TensorRT's bindings from JetPack's apt packages: a package, no pip metadata
    (tmp_path / "apt_tensorrt").mkdir()
    (tmp_path / "apt_tensorrt" / "__init__.py").write_text(
        'raise ImportError("libnvinfer.so.10")\n__version__ = "10.3.0"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_version("apt_tensorrt") == "10.3.0" and "apt_tensorrt" not in sys.modules
    assert module_version("no_such_module_here") is None


def fake_smi(*answers: tuple[int, str]):
    calls, queue = [], list(answers)

    def run(cmd):
        calls.append(cmd)
        return queue.pop(0) if cmd[0] == "nvidia-smi" else (127, "not found")

    return run, calls


def test_gpus_from_nvidia_smi():
    run, _ = fake_smi((0, "NVIDIA H200, 570.124.06, 9.0, 143771\n"))
    assert gpus(run) == [H200]


def test_gpus_on_an_old_driver_and_on_jetson():
    old = (2, 'Field "compute_cap" is not a valid field to query.\n')
    run, calls = fake_smi(old, (0, "NVIDIA Thor, 580.00, [N/A]\n"))
    assert gpus(run) == [{"name": "NVIDIA Thor", "driver_version": "580.00", "compute_cap": None, "memory.total": None}]
    assert "compute_cap" not in calls[1][1]
    assert gpus(fake_smi((127, "nvidia-smi: not found on PATH"))[0]) == []


def env_with(**parts) -> dict:
    base = {"jetson": None, "gpus": [], "tensorrt": None, "cpu": {"model": "AMD EPYC", "cores": 2, "arch": "x86_64"}}
    return base | parts


THOR = {
    "model": "NVIDIA Jetson AGX Thor Developer Kit",
    "l4t": "38.2.0",
    "jetpack": "7.0",
    "soc": "tegra264",
    "power_mode": "MAXN",
    "power_mode_id": 0,
    "max_power_mode": "MAXN",
    "clocks": "on",
    "notes": [],
    "power_mode_is_max": True,
}


def test_device_slugs():
    assert device_slug(env_with(gpus=[H200])) == "cuda-sm90-h200"
    assert device_slug(env_with(jetson=THOR, gpus=[H200])) == "jetson-agx-thor-developer-kit"  # the board first
    cpu = device_slug(env_with())
    assert cpu.startswith("cpu-x86_64-") and cpu == device_slug(env_with())  # stable
    assert cpu != device_slug(env_with(cpu={"model": "Neoverse-V2", "cores": 72, "arch": "x86_64"}))


def test_device_descriptions():
    assert device_description(env_with(gpus=[H200], tensorrt="10.3.0")) == (
        "NVIDIA H200 (compute 9.0, driver 570.124.06); TensorRT 10.3.0"
    )
    assert device_description(env_with(jetson=THOR)) == (
        "NVIDIA Jetson AGX Thor Developer Kit, L4T 38.2.0 (JetPack 7.0), MAXN, jetson_clocks on"
    )
    assert device_description(env_with()) == "CPU only: AMD EPYC (2 logical cores, x86_64)"


def test_this_machine_slug_matches_its_hardware():
    env = environment()
    expected = "jetson-" if env["jetson"] else "cuda-" if env["gpus"] else "cpu-"
    assert device_slug(env).startswith(expected) and device_slug(env) == device_slug(environment())
