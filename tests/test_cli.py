"""The command line: lazy imports, entry points, one-line user errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BLOCK_HEAVY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "onnxruntime", "modelopt", "tensorrt", "onnxsim", "onnxslim"}:
            raise ImportError(f"{name} is blocked for this test")
sys.meta_path.insert(0, Block())
sys.argv = ["msvit-edge", *sys.argv[1:]]
from msvit_edge.cli.app import main
main()
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_help_works_without_torch_onnxruntime_modelopt_or_tensorrt():
    result = run("-c", BLOCK_HEAVY, "--help")
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "Usage" in result.stdout
    sub = run("-c", BLOCK_HEAVY, "train", "--help")
    assert sub.returncode == 0 and "--fine-target" in sub.stdout


def test_module_entry_point_and_console_script_agree(tmp_path):
    module = run("-m", "msvit_edge", "--version", cwd=tmp_path)
    script = subprocess.run(
        [str(Path(sys.executable).parent / "msvit-edge"), "--version"], capture_output=True, text=True
    )
    assert module.returncode == 0 and module.stdout.startswith("msvit-edge ")
    assert script.stdout == module.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--init", "{tmp}/missing.pth"], "{tmp}/missing.pth: checkpoint not found"),
        (["--stage", "gate"], "--stage must be 'backbone' or 'msvit'"),
        (["--data", "{tmp}/nothing-here"], "{tmp}/nothing-here: not a dataset"),
        (["--fine-target", "1.5"], "gBaS: target must be in (0, 1), got 1.5"),
        (["--val-size", "0"], "--val-size must be >= 1"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--device", "cuda"], "--device cuda: no CUDA GPU is available"),
        (["--data", "{tmp}/cifar100.npz", "--val-size", "10"], "100 classes but the model has 10 outputs"),
    ],
)
def test_bad_input_is_one_line_no_traceback_no_output(tmp_path, args, message):
    out = tmp_path / "run"
    images, labels = np.zeros((200, 80, 80, 3), np.uint8), np.arange(200) % 100
    np.savez(tmp_path / "cifar100.npz", images=images, labels=labels, classes=[str(c) for c in range(100)])
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run("-m", "msvit_edge", "train", "--out", str(out), *args)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in result.stderr
    assert not out.exists()


def test_a_corrupt_image_stops_training_unless_skipping_is_asked_for(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (80, 80), (20 * i, 0, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = [
        "--data",
        str(tmp_path / "data"),
        "--val-size",
        "4",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--stage",
        "backbone",
        "--no-progress",
    ]
    stopped = run("-m", "msvit_edge", "train", "--out", str(tmp_path / "stop"), *common)
    assert stopped.returncode == 1 and "broken.png" in stopped.stderr and "Traceback" not in stopped.stderr
    skipped = run("-m", "msvit_edge", "train", "--out", str(tmp_path / "skip"), *common, "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr[-1500:]
    assert "broken.png" in skipped.stderr and (tmp_path / "skip" / "model.safetensors").is_file()
