"""The command line: lazy imports, entry points, one-line user errors."""

from __future__ import annotations

import json
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


class Payload:
    """Pickled code: unpickling it would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    """Files that each command must refuse in one line: checkpoints, data sets and folders."""
    import torch
    from PIL import Image

    from msvit_edge.checkpoint import save_checkpoint
    from msvit_edge.config import MSViTConfig, preset
    from msvit_edge.msvit import MSViT
    from msvit_edge.vit import VisionTransformer

    vit = VisionTransformer(preset("vit_demo_patch8_80")).state_dict()
    torch.save({"model": vit}, tmp_path / "deit.pth")  # timm/DeiT layout, torch.save format
    torch.save({"model": vit, "x": Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    (tmp_path / "resume").mkdir()  # a run folder whose state.pt carries code
    save_checkpoint(MSViT(MSViTConfig(preset("vit_demo_patch8_80"))), tmp_path / "resume" / "last.safetensors")
    torch.save({"epoch": 1, "x": Payload(tmp_path / "pwned")}, tmp_path / "resume" / "state.pt")
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 80, 80, 3), np.uint8), labels=np.zeros(0, np.int64))
    nan = np.full((4, 80, 80, 3), 0.5, np.float32)
    nan[1, 3, 4, 0] = np.nan
    np.savez(tmp_path / "nan.npz", images=nan, labels=np.zeros(4, np.int64))  # all label 0: NaN logits scored 100%
    (tmp_path / "corrupt" / "a").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "corrupt" / "a" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "blocker").write_text("a file where a folder is expected")
    Image.new("RGB", (80, 80)).save(tmp_path / "image.png")
    return tmp_path


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--init", "{tmp}"], "{tmp}: is a folder, not a checkpoint file"),
        (["eval", "--ckpt", "{tmp}"], "{tmp}: is a folder, not a checkpoint file"),
        (["eval", "--ckpt", "{tmp}/deit.pth"], "deit.pth: not an msvit-edge checkpoint: a plain ViT/DeiT one"),
        (["export", "--ckpt", "{tmp}/deit.pth"], "deit.pth: not an msvit-edge checkpoint: a plain ViT/DeiT one"),
        (["train", "--init", "{tmp}/evil.pth"], "evil.pth: refused to load pickled objects beyond tensors"),
        (["train", "--resume", "--out", "{tmp}/resume"], "state.pt: refused to load pickled objects beyond tensors"),
        (["train", "--out", "{tmp}/blocker/run"], "{tmp}/blocker: cannot create the output folder"),
        (["eval", "--device", "cuda"], "--device cuda: no CUDA GPU is available"),
        (["eval", "--device", "gpu"], "--device gpu: not a device"),
        (["eval", "--data", "{tmp}/empty.npz"], "empty.npz: holds no images"),
        (["export", "--calib", "{tmp}/empty.npz"], "empty.npz: holds no images"),
        (["eval", "--data", "{tmp}/corrupt", "--skip-corrupt"], "corrupt: holds no readable images"),
        (["eval", "--data", "{tmp}/nan.npz"], "nan.npz: float images hold 1 NaN or infinite values"),
        (["export", "--calib", "{tmp}/nan.npz"], "nan.npz: float images hold 1 NaN or infinite values"),
        (["eval", "--data", "{tmp}/image.png"], "image.png: not a dataset"),
    ],
)
def test_bad_files_are_one_line_errors_that_write_nothing(bad_files, args, message):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    before = sorted(p.relative_to(bad_files) for p in bad_files.rglob("*"))
    args = [a.replace("{tmp}", str(bad_files)) for a in args]
    out = [] if "--out" in args else ["--out", str(bad_files / "out")]
    result = run("-m", "msvit_edge", *args, *out)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: ") and message.replace("{tmp}", str(bad_files)) in lines[-1]
    assert len(lines) == 1 or "--skip-corrupt" in args  # skipping reports each file before the error
    assert sorted(p.relative_to(bad_files) for p in bad_files.rglob("*")) == before  # no output, no payload run


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

    from msvit_edge.checkpoint import load_checkpoint
    from msvit_edge.config import preset
    from msvit_edge.vit import VisionTransformer

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
