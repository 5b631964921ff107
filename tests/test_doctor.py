"""msvit_edge.machine.doctor: the matrix follows from what is installed, every gap names its fix, and the text shows it.

Besides a CPU-only machine without TensorRT, three recorded kinds of machine are described by ``environment()``-shaped
dicts: a Jetson on JetPack 6 with apt's TensorRT and no PyTorch, an H200 workstation with everything, and one
without ONNX Runtime.
"""

from __future__ import annotations

import subprocess
import sys

from msvit_edge.machine.doctor import (
    BACKENDS,
    PRECISIONS,
    diagnose,
    format_report,
    install_command,
    missing_backend_error,
)
from msvit_edge.machine.environment import PACKAGES

H200 = {"name": "NVIDIA H200", "driver_version": "570.124.06", "compute_cap": "9.0", "memory.total": 143771}
ORIN = {
    "model": "NVIDIA Jetson AGX Orin Developer Kit",
    "l4t": "36.4.3",
    "jetpack": "6.2",
    "soc": "tegra234",
    "power_mode": "MAXN",
    "power_mode_id": 0,
    "max_power_mode": "MAXN",
    "clocks": "unknown",
    "notes": ["jetson_clocks state unknown: `jetson_clocks --show` said 'Please run as root'"],
    "power_mode_is_max": True,
}


def machine(installed: dict[str, str], **parts) -> dict:
    """An ``environment()`` with the given distributions installed (everything else missing)."""
    base = {
        "msvit_edge": "0.1.0",
        "packages": {d: installed.get(d) for d in PACKAGES},
        "onnxruntime_providers": ["CPUExecutionProvider"] if "onnxruntime" in installed else None,
        "torch_cuda": None,
        "tensorrt": installed.get("tensorrt"),
        "cpu": {"model": "Cortex-A78AE", "cores": 12, "arch": "aarch64"},
        "gpus": [],
        "jetson": None,
    }
    return base | parts


CORE = {"numpy": "1.26.4", "onnx": "1.16.2", "onnxruntime": "1.20.0", "polygraphy": "0.49.9"}


def test_a_machine_without_tensorrt_or_gpu_reports_tensorrt_missing_with_its_install_command(tmp_path):
    report = diagnose(machine(CORE), root=tmp_path)  # no /dev/nvidia0 under the fake root
    assert [report.capability("tensorrt", p).status for p in PRECISIONS] == ["no"] * 3
    reason = report.capability("tensorrt", "fp32").reason
    assert 'pip install ".[tensorrt]" (in the msvit-edge clone)' in reason and "no NVIDIA GPU" in reason
    assert report.capability("onnxruntime", "fp32").status == "yes"
    rows = [line.split() for line in format_report(report).splitlines()]
    assert ["tensorrt", "missing", "pip", "install", '".[tensorrt]"', "(in", "the", "msvit-edge", "clone)"] in rows
    assert ["tensorrt", "no", "no", "no"] in rows


def test_a_device_node_alone_counts_as_a_gpu(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").touch()
    report = diagnose(machine(CORE | {"tensorrt": "10.13.0"}), root=tmp_path)
    assert report.capability("tensorrt", "fp32").status == "yes"


def test_diagnose_imports_nothing_heavy():
    code = (
        "import sys; from msvit_edge.machine.doctor import diagnose, format_report; format_report(diagnose()); "
        "print(sorted(m for m in ('torch', 'tensorrt', 'modelopt', 'torch_tensorrt') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_jetson_with_apt_tensorrt_and_no_pytorch_runs_carried_graphs():
    report = diagnose(machine(CORE | {"tensorrt": "10.3.0"}, jetson=ORIN))
    assert report.capability("tensorrt", "fp32").status == "yes"  # found from the module, not pip metadata
    fp16, int8 = report.capability("tensorrt", "fp16"), report.capability("tensorrt", "int8")
    assert (fp16.status, int8.status) == ("graphs", "graphs") and fp16.available
    assert 'nvidia-modelopt is not installed: pip install ".[quantize]"' in int8.reason
    assert (
        "torch is not installed: pip install torch --index-url https://pypi.jetson-ai-lab.io/jp6/cu126" in int8.reason
    )
    assert next(p for p in report.packages if p.name == "tensorrt").version == "10.3.0"
    assert any(p.name == "jetson-stats" for p in report.packages)  # only listed on a Jetson
    assert any("onnxruntime-gpu --index-url https://pypi.jetson-ai-lab.io/jp6/cu126" in h for h in report.hints)
    assert any("jetson_clocks state unknown" in h for h in report.hints)
    assert install_command("tensorrt", report.environment).startswith("sudo apt install nvidia-tensorrt")


def test_gpu_workstation_with_everything():
    everything = CORE | {
        "torch": "2.8.0",
        "nvidia-modelopt": "0.40.0",
        "tensorrt": "10.13.0",
        "torch-tensorrt": "2.8.0",
    }
    env = machine(everything, gpus=[H200], torch_cuda="12.8")
    env["onnxruntime_providers"] = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    report = diagnose(env)
    statuses = {(c.backend, c.precision): c.status for c in report.capabilities}
    fp32_only = {("torch-tensorrt", "fp16"), ("torch-tensorrt", "int8")}
    assert {k for k, s in statuses.items() if s != "yes"} == {("torch", "int8")} | fp32_only
    assert report.hints == ()
    assert "jetson-stats" not in {p.name for p in report.packages}


def test_no_onnxruntime_and_a_cpu_torch_on_a_gpu_machine():
    report = diagnose(machine({"numpy": "2.0", "torch": "2.8.0+cpu"}, gpus=[H200]))
    assert report.capability("onnxruntime", "int8").reason.startswith("onnxruntime is not installed: pip install")
    assert report.capability("torch", "fp16").status == "no"
    assert any("torch is a CPU build" in h for h in report.hints)


def test_missing_backend_error_is_one_line_with_the_fix():
    report = diagnose(machine(CORE))
    err = str(missing_backend_error("tensorrt", report=report))
    assert "\n" not in err and err.startswith("backend tensorrt is not available here: tensorrt is not installed")
    assert 'pip install ".[tensorrt]"' in err and "msvit-edge doctor" in err
    assert "PyTorch FP16" not in str(missing_backend_error("torch", "int8", report=report))
    assert "unknown backend 'tvm'" in str(missing_backend_error("tvm"))


def test_format_report_covers_every_cell():
    report = diagnose(machine(CORE, jetson=ORIN))
    text = format_report(report)
    assert "NVIDIA Jetson AGX Orin Developer Kit, L4T 36.4.3 (JetPack 6.2)" in text.splitlines()[0]
    matrix = text.split("\nBackends\n")[1].split("\n  graphs:")[0].splitlines()
    assert [line.split() for line in matrix] == [
        list(PRECISIONS),
        *([b, *(report.capability(b, p).status for p in PRECISIONS)] for b in BACKENDS),
    ]
    assert matrix[1].split() == ["onnxruntime", "yes", "graphs", "graphs"]  # no ModelOpt, no torch on this Jetson
    assert "Why not" in text and "Hints" in text


def int8_report_line(int8: dict | None) -> str:
    env = machine(CORE, cpu={"model": "AMD EPYC 7B13", "cores": 8, "arch": "x86_64", "int8": int8})
    return next(line for line in format_report(diagnose(env)).splitlines() if line.startswith("CPU int8 kernels: "))


def test_format_report_says_what_the_cpu_int8_kernels_do():
    avx2 = int8_report_line({"kernels": "avx2", "u8s8_saturates": True})
    assert avx2.startswith("CPU int8 kernels: avx2 without VNNI") and "saturate" in avx2 and "uint8" in avx2
    vnni = int8_report_line({"kernels": "avx512-vnni", "u8s8_saturates": False})
    assert vnni.startswith("CPU int8 kernels: avx512-vnni") and "saturate" not in vnni and "VNNI" not in vnni
    assert int8_report_line(None).startswith("CPU int8 kernels: unknown")


def test_doctor_says_whether_serve_can_run_here_and_what_it_lacks():
    from msvit_edge.machine.doctor import serving_line
    from msvit_edge.machine.environment import serving

    assert serving_line({"tritonserver": "/x", "shared_libpython": True}).startswith("ready")
    assert "--enable-shared" in serving_line({"tritonserver": "/x", "shared_libpython": False})
    assert "nvidia-pytriton==0.7.0" in serving_line({"tritonserver": None, "shared_libpython": True})
    facts = serving()  # this machine's, as environment() records them
    assert set(facts) == {"tritonserver", "shared_libpython"} and isinstance(facts["shared_libpython"], bool)
    assert f"Triton serving: {serving_line(facts)}" in format_report(diagnose())
