"""A plain (non-editable) wheel installs cli/, calibration/ and engines/ as msvit_edge subpackages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_top_level_folders_into_the_package(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("msvit_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"msvit_edge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    probe = (
        "import msvit_edge.cli.app as a, msvit_edge.engines as e, msvit_edge.calibration as c; "
        "print(a.__file__, e.__file__, c.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    assert all(f.startswith(str(tmp_path / "site" / "msvit_edge")) for f in files), files
    assert "msvit_edge/assets/demo.safetensors" in names


def test_sources_compile_under_python_3_10(tmp_path):
    """JetPack 6 ships Python 3.10: no syntax from later versions. (Syntax only: there is no torch for 3.10 here, so
    stdlib APIs newer than 3.10 are not exercised by this test.)"""
    import shutil

    import pytest

    candidates = [shutil.which("python3.10"), *map(str, Path("/root/.pyenv/versions").glob("3.10*/bin/python"))]
    working = [c for c in candidates if c and subprocess.run([c, "-V"], capture_output=True).returncode == 0]
    if not working:
        pytest.skip("no working Python 3.10 interpreter on this machine")
    python310 = working[0]
    probe = (
        "import pathlib, sys; [compile(p.read_text(), str(p), 'exec') for d in sys.argv[1:] "
        "for p in pathlib.Path(d).rglob('*.py')]"
    )
    dirs = [str(ROOT / d) for d in ("msvit_edge", "cli", "engines", "benchmarks", "tests")]
    result = subprocess.run([python310, "-c", probe, *dirs], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
