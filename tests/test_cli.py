"""The command line: lazy imports, entry points, one-line user errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import msvit_edge

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
    for command in ("eval", "export", "build", "bench", "doctor", "demo"):  # each command module imports lightly
        sub = run("-c", BLOCK_HEAVY, command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, f"{command}: {sub.stderr}"


def test_module_entry_point_and_console_script_agree(tmp_path):
    module = run("-m", "msvit_edge", "--version", cwd=tmp_path)
    script = subprocess.run(
        [str(Path(sys.executable).parent / "msvit-edge"), "--version"], capture_output=True, text=True
    )
    assert module.returncode == 0 and module.stdout == f"msvit-edge {msvit_edge.__version__}\n"
    assert script.returncode == 0 and script.stdout == module.stdout


@pytest.mark.slow
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


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders (blocker/run covers root)")
def test_a_read_only_run_folder_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = run("-m", "msvit_edge", "train", "--out", str(locked / "run"), "--epochs", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    message = f"error: {locked}: cannot write the output folder {locked / 'run'}: no write permission"
    assert result.stderr.strip() == message


def test_eval_skip_corrupt_skips_non_image_files_too(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (80, 80), (90 * i, 0, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "a" / "notes.txt").write_text("not an image")
    args = ["eval", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--overlays", "0"]
    stopped = run("-m", "msvit_edge", *args)
    assert stopped.returncode == 1 and "notes.txt: not an image file" in stopped.stderr
    skipped = run("-m", "msvit_edge", *args, "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "skipping" in skipped.stderr and "notes.txt" in skipped.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["images"] == 4


def test_num_classes_keeps_an_init_classifier_that_already_has_them(tmp_path):
    import torch

    from msvit_edge.model.checkpoint import load_checkpoint
    from msvit_edge.model.config import preset
    from msvit_edge.model.vit import VisionTransformer

    torch.manual_seed(1)
    vit = VisionTransformer(preset("vit_demo_patch8_80"))
    with torch.no_grad():
        vit.head.weight.normal_()  # unlike any fresh initialisation
    torch.save({"model": vit.state_dict()}, tmp_path / "vit.pth")
    args = ["--init", str(tmp_path / "vit.pth"), "--num-classes", "10", "--stage", "backbone", "--epochs", "1"]
    args += ["--train-size", "16", "--val-size", "8", "--batch-size", "8", "--lr", "1e-9", "--no-progress"]
    result = run("-m", "msvit_edge", "train", "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 0, result.stderr[-2000:]
    trained, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    torch.testing.assert_close(trained.head.weight, vit.head.weight, rtol=0, atol=1e-6)  # lr 1e-9: barely moved


def test_help_shows_flags_as_flags():
    for command in ([], ["train"], ["eval"], ["export"]):
        result = run("-m", "msvit_edge", *command, "--help")
        assert result.returncode == 0 and "--help" in result.stdout
        assert "<bool>" not in result.stdout, result.stdout
        if command == ["export"]:  # boolean options: the flag, then at once its help, no value between
            assert re.search(r"^\s+--force\s{2,}Replace OUT", result.stdout, re.M), result.stdout
            assert re.search(r"^\s+--random-weights\s{2,}A latency-only", result.stdout, re.M), result.stdout


def test_every_option_has_help_and_choices_are_listed_and_taken_in_any_case(tmp_path):
    from typer.main import get_command

    from msvit_edge.cli.app import app

    root = get_command(app)
    bare = [f"{name} {p.opts[0]}" for name, command in root.commands.items() for p in command.params
            if p.param_type_name == "option" and not p.help and "--help" not in p.opts]  # fmt: skip
    assert bare == []
    assert "<fp32|fp16|int8>" in run("-m", "msvit_edge", "build", "--help").stdout
    # INT8 is taken (the error is the missing bundle's, not the option's); a wrong name is refused as a usage error
    taken = run("-m", "msvit_edge", "build", "--bundle", tmp_path / "none", "--precision", "INT8", cwd=tmp_path)
    assert taken.returncode == 1 and "--precision" not in taken.stderr and "none" in taken.stderr
    wrong = run("-m", "msvit_edge", "build", "--precision", "int4", cwd=tmp_path)
    assert wrong.returncode == 2 and "int4" in wrong.stderr


def test_train_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run("-m", "msvit_edge", "train", "--out", tmp_path / "mine", "--train-size", "64", cwd=tmp_path)
    assert result.returncode == 1 and "is not empty" in result.stderr and result.stderr.count("\n") == 1
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_doctor_json_is_the_report_as_data():
    result = run("-m", "msvit_edge", "doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    from msvit_edge.machine.doctor import diagnose

    assert report["capabilities"] == diagnose().to_dict()["capabilities"] and len(report["capabilities"]) >= 12


def test_quiet_keeps_only_warnings_and_errors(bundle, tmp_path):
    args = ["build", "--bundle", bundle.path, "--backend", "onnxruntime", "--out"]
    loud = run("-m", "msvit_edge", *args, tmp_path / "a", cwd=tmp_path)
    quiet = run("-m", "msvit_edge", "--quiet", *args, tmp_path / "b", cwd=tmp_path)
    assert loud.returncode == quiet.returncode == 0, quiet.stderr
    assert f"engine: {tmp_path / 'a'}" in loud.stdout and quiet.stdout == ""
    assert (tmp_path / "b" / "manifest.json").is_file()
