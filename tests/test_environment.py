"""msvit_edge.machine.environment: complete, JSON-serialisable, cheap (no torch or TensorRT import), stable device
names."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from types import SimpleNamespace

import pytest

from msvit_edge import __version__
from msvit_edge.machine.environment import (
    PACKAGES,
    cpu,
    device_description,
    device_slug,
    environment,
    gpus,
    module_version,
    torch_cuda,
)

H200 = {"name": "NVIDIA H200", "driver_version": "570.124.06", "compute_cap": "9.0", "memory.total": 143771}
KEYS = {"msvit_edge", "os", "python", "packages", "onnxruntime_providers", "torch_cuda", "tensorrt", "cpu", "gpus",
        "serving"}  # fmt: skip


EPYC_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"


OS_RELEASE = 'NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'


def fake_root(root, cpuinfo: str = EPYC_CPUINFO):
    """A filesystem root with /proc/cpuinfo and /etc/os-release only: no Jetson files."""
    for path, text in (("proc/cpuinfo", cpuinfo), ("etc/os-release", OS_RELEASE)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_environment_is_complete_and_json_serialisable(tmp_path):
    run, _ = fake_smi((0, "NVIDIA H200, 570.124.06, 9.0, 143771\n"))
    env = environment(fake_root(tmp_path), run)
    assert set(env) == KEYS | {"jetson"}
    assert env["msvit_edge"] == __version__ and set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert env["cpu"]["model"] == "AMD EPYC 7B13"
    assert env["cpu"]["int8"] == {"kernels": "avx2", "u8s8_saturates": True}
    assert env["os"]["distro"] == "Debian GNU/Linux 12 (bookworm)"
    assert env["gpus"] == [H200] and env["jetson"] is None
    assert json.loads(json.dumps(env)) == env


@pytest.mark.parametrize(
    "flags, kernels, saturates",
    [
        ("flags\t\t: fpu sse2 avx2 fma", "avx2", True),
        ("flags\t\t: fpu avx2 avx512bw avx512_vnni", "avx512-vnni", False),
        ("Features\t: fp asimd evtstrm aes crc32 asimddp", "arm-dotprod", False),
        ("", "generic", False),
    ],
)
def test_int8_kernels_from_cpuinfo_flags(tmp_path, flags, kernels, saturates):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(f"processor\t: 0\n{flags}\n")
    assert cpu(tmp_path)["int8"] == {"kernels": kernels, "u8s8_saturates": saturates}


def test_environment_imports_neither_torch_nor_tensorrt():
    code = (
        "import sys; from msvit_edge.machine.environment import environment; environment(); "
        "print(sorted(m for m in ('torch', 'tensorrt') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_torch_cuda_read_from_source_without_import(tmp_path, monkeypatch):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("never imported")\n')
    version_py = tmp_path / "torch" / "version.py"
    version_py.write_text("from typing import Optional\n__version__ = '2.9.0+cu128'\ncuda: Optional[str] = '12.8'\n")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert torch_cuda() == "12.8" and "torch" not in sys.modules
    version_py.write_text("from typing import Optional\n__version__ = '2.9.0+cpu'\ncuda: Optional[str] = None\n")
    assert torch_cuda() is None


def test_torch_cuda_of_an_imported_or_blocked_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(version=SimpleNamespace(cuda="12.4")))
    assert torch_cuda() == "12.4"
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch blocked
    assert torch_cuda() is None


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


def test_slugs_of_fake_machines(tmp_path):
    def no_smi(cmd):
        return 127, f"{cmd[0]}: not found"

    h200 = environment(fake_root(tmp_path / "h200"), fake_smi((0, "NVIDIA H200, 570.124.06, 9.0, 143771\n"))[0])
    assert device_slug(h200) == "cuda-sm90-h200"
    epyc = device_slug(environment(fake_root(tmp_path / "epyc"), no_smi))
    assert epyc == f"cpu-{platform.machine().lower()}-0d32a54a"  # sha256 of the model: names stay put across releases
    assert epyc == device_slug(environment(fake_root(tmp_path / "epyc2"), no_smi))  # same model, same slug
    other = fake_root(tmp_path / "xeon", EPYC_CPUINFO.replace("AMD EPYC 7B13", "Intel Xeon Platinum 8480+"))
    assert device_slug(environment(other, no_smi)) != epyc
