"""Packaging: a plain wheel installs cli/, calibration/ and engines/ as msvit_edge subpackages, and the light runtime
(the wheel without extras: no PyTorch) installs into Python 3.10, JetPack 6's Python, and runs a bundle end to end
there as a Jetson would. Where no Python 3.10 exists these tests fail, saying so: they never skip."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Python 3.10 environments with the light runtime, one per (interpreter, dependency list); git-ignored. Building
# one downloads the dependencies; later runs only reinstall the wheel.
RUNTIMES = ROOT / ".venv-py310"
PIP = ["-m", "pip", "--disable-pip-version-check", "-q"]


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A plain (non-editable) wheel of this checkout."""
    dist = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, ROOT)
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = dist.glob("msvit_edge-*.whl")
    return path


@pytest.fixture(scope="module")
def python310() -> str:
    """A working Python 3.10: python3.10 on PATH, else pyenv's."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.10"), *map(str, sorted(pyenv.glob("versions/3.10*/bin/python3.10")))]
    probe = "import sys, ensurepip; assert sys.version_info[:2] == (3, 10)"
    for python in filter(None, candidates):
        if run(python, "-c", probe).returncode == 0:
            return python
    pytest.fail(
        "no Python 3.10 with venv support here (looked for python3.10 on PATH and under $PYENV_ROOT/versions): "
        "JetPack 6 runs Python 3.10, so the light runtime is tested on it; install one, e.g. `pyenv install 3.10`"
    )


@pytest.fixture(scope="module")
def light_runtime(python310: str, wheel: Path) -> Path:
    """The bin/ folder of a Python 3.10 environment holding the wheel and its declared dependencies, no extras."""
    deps = _requirements(wheel)
    version = run(python310, "-VV").stdout.strip()
    env = RUNTIMES / hashlib.sha256(json.dumps([version, deps]).encode()).hexdigest()[:16]
    RUNTIMES.mkdir(exist_ok=True)
    with (RUNTIMES / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other test runs in this checkout may be building the same one
        if not (env / "complete").exists():
            _create(python310, env, wheel)
        reinstall = run(env / "bin" / "python", *PIP, "install", "--no-deps", "--force-reinstall", wheel)
        assert reinstall.returncode == 0, reinstall.stderr[-2000:]
    return env / "bin"


def _requirements(wheel: Path) -> list[str]:
    """What the wheel requires without extras (its METADATA's Requires-Dist lines with no marker on an extra)."""
    with zipfile.ZipFile(wheel) as z:
        (metadata,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        lines = z.read(metadata).decode().splitlines()
    return sorted(line for line in lines if line.startswith("Requires-Dist:") and "extra ==" not in line)


def _create(python310: str, env: Path, wheel: Path) -> None:
    for old in RUNTIMES.iterdir():  # environments of other dependency lists
        if old.is_dir():
            shutil.rmtree(old)
    made = run(python310, "-m", "venv", env)
    assert made.returncode == 0, made.stderr[-2000:]
    installed = run(env / "bin" / "python", *PIP, "install", wheel, timeout=900)
    assert installed.returncode == 0, f"the light runtime does not install on Python 3.10:\n{installed.stderr[-3000:]}"
    (env / "complete").touch()


def test_wheel_maps_top_level_folders_into_the_package(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"msvit_edge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    installed = run(sys.executable, *PIP, "install", "--no-deps", "--target", tmp_path / "site", wheel)
    assert installed.returncode == 0, installed.stderr[-2000:]
    probe = (
        "import msvit_edge.cli.app as a, msvit_edge.engines as e, msvit_edge.calibration as c; "
        "print(a.__file__, e.__file__, c.__file__)"
    )
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    result = run(sys.executable, "-c", probe, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert all(f.startswith(str(tmp_path / "site" / "msvit_edge")) for f in files), files
    assert "msvit_edge/assets/demo.safetensors" in names


def test_wheel_holds_every_source_module(wheel):
    """Every module of the checkout lands in the wheel: a subpackage missing from pyproject's list would not."""
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = {"msvit_edge": "msvit_edge", "cli": "msvit_edge/cli", "calibration": "msvit_edge/calibration",
               "engines": "msvit_edge/engines"}  # fmt: skip
    expected = {f"{into}/{p.relative_to(ROOT / folder).as_posix()}" for folder, into in folders.items()
                for p in (ROOT / folder).rglob("*.py")}  # fmt: skip
    assert expected - names == set()


def test_sources_compile_under_python_3_10(python310):
    """No syntax from later versions anywhere, including the modules that need PyTorch (absent under 3.10 here)."""
    probe = (
        "import pathlib, sys; [compile(p.read_text(), str(p), 'exec') for d in sys.argv[1:] "
        "for p in pathlib.Path(d).rglob('*.py')]"
    )
    dirs = [ROOT / d for d in ("msvit_edge", "cli", "engines", "calibration", "benchmarks", "tests")]
    result = run(python310, "-c", probe, *dirs)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_the_light_runtime_installs_on_python_3_10_without_pytorch(light_runtime):
    probe = "import sys, importlib.util as u; print(sys.version_info[:2] == (3, 10), u.find_spec('torch') is None)"
    assert run(light_runtime / "python", "-I", "-c", probe).stdout.split() == ["True", "True"]
    check = run(light_runtime / "python", *PIP, "check")
    assert check.returncode == 0, check.stdout + check.stderr


BUNDLE_ON_310 = """
import sys
import numpy as np
from msvit_edge.bundle import Bundle
from msvit_edge.engines.ort import OnnxRuntimePipeline
bundle = Bundle(sys.argv[1])
ref = bundle.reference()
with OnnxRuntimePipeline(bundle) as pipe:
    out = pipe(bundle.preprocess(ref.images), bundle.threshold)
max_abs = float(np.abs(out.logits - ref.logits).max())
print(sys.version_info[:2] == (3, 10), np.array_equal(out.counts, ref.counts), max_abs)
"""


@pytest.mark.slow
def test_a_bundle_runs_on_python_3_10_as_pytorch_ran_it(light_runtime, bundle):
    result = run(light_runtime / "python", "-I", "-c", BUNDLE_ON_310, bundle.path)  # -I: not this checkout's code
    assert result.returncode == 0, result.stderr[-2000:]
    on_310, counts_equal, max_abs = result.stdout.split()
    assert on_310 == counts_equal == "True" and float(max_abs) <= 1e-4


@pytest.mark.slow
def test_build_bench_help_and_doctor_run_on_python_3_10_from_the_wheel(light_runtime, bundle, tmp_path):
    copy = shutil.copytree(bundle.path, tmp_path / "bundle")  # build may write into its bundle
    cli = light_runtime / "msvit-edge"
    options = ["--backend", "onnxruntime", "--precision", "fp32", "--out", tmp_path / "e"]
    built = run(cli, "build", "--bundle", copy, *options, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "onnxruntime fp32" in built.stdout
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert (manifest["backend"], manifest["precision"]) == ("onnxruntime", "fp32")
    batch1 = manifest["validation"]["batch1"]
    assert batch1["counts_equal"] and batch1["logits"]["max_abs"] <= 1e-4
    bench = ["bench", tmp_path / "e", "--batch", "1", "--warmup", "0", "--iters", "3", "--out", tmp_path / "r"]
    benched = run(cli, *bench, cwd=tmp_path)  # the torch-free bench path: accuracy against the stored answers
    assert benched.returncode == 0, benched.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [(e["status"], e["accuracy"]["agreement"]) for e in report["engines"]] == [("passed", 1.0)]
    helped = run(cli, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("export", "build", "bench", "doctor"))
    doctor = run(cli, "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stderr[-2000:]
    table = doctor.stdout.split("Packages\n", 1)[1].split("\n\n", 1)[0]  # name, version or "missing", purpose
    packages = dict(line.split()[:2] for line in table.splitlines())
    assert packages["torch"] == "missing" and packages["onnxruntime"] != "missing"
