"""Bad input, every command, one table: each case is one line on stderr (no traceback), exit code 2 for usage
errors and 1 for failed work, and nothing written (no output, no temporary, no unpickled payload run).

The cases run in-process through the console entry point (``msvit_edge.cli.app.main``), as the installed
``msvit-edge`` runs them; ``test_cli.py`` checks that the entry points agree.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

USAGE, FAILED = 2, 1


class Payload:
    """Pickled code: unpickling it would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def files(tmp_path_factory, workdir, bundle) -> Path:
    """Everything the cases refuse: checkpoints, data sets, folders and damaged bundles."""
    import torch
    from PIL import Image

    from msvit_edge.model.checkpoint import save_checkpoint
    from msvit_edge.model.config import MSViTConfig, preset
    from msvit_edge.model.msvit import MSViT
    from msvit_edge.model.vit import VisionTransformer

    root = tmp_path_factory.mktemp("bad")
    vit = VisionTransformer(preset("vit_demo_patch8_80")).state_dict()
    torch.save({"model": vit}, root / "deit.pth")  # timm/DeiT layout, torch.save format
    torch.save({"model": vit, "x": Payload(root / "pwned")}, root / "evil.pth")
    (root / "resume").mkdir()  # a run folder whose state.pt carries code
    save_checkpoint(MSViT(MSViTConfig(preset("vit_demo_patch8_80"))), root / "resume" / "last.safetensors")
    torch.save({"epoch": 1, "x": Payload(root / "pwned")}, root / "resume" / "state.pt")
    np.savez(root / "empty.npz", images=np.zeros((0, 80, 80, 3), np.uint8), labels=np.zeros(0, np.int64))
    nan = np.full((4, 80, 80, 3), 0.5, np.float32)
    nan[1, 3, 4, 0] = np.nan
    np.savez(root / "nan.npz", images=nan, labels=np.zeros(4, np.int64))  # all label 0: NaN logits scored 100%
    images, labels = np.zeros((200, 80, 80, 3), np.uint8), np.arange(200) % 100
    np.savez(root / "cifar100.npz", images=images, labels=labels, classes=[str(c) for c in range(100)])
    np.savez(root / "few.npz", images=np.zeros((10, 32, 32, 3), np.uint8), labels=np.zeros(10, np.int64))
    (root / "corrupt" / "a").mkdir(parents=True)
    for i in range(3):
        (root / "corrupt" / "a" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "emptydir").mkdir()
    (root / "blocker").write_text("a file where a folder is expected")
    (root / "existing").mkdir()  # a user's folder: no command may replace it, --force or not
    (root / "existing" / "notes.txt").write_text("the user's own file")
    Image.new("RGB", (80, 80)).save(root / "image.png")
    shutil.copy(workdir / "tiny.safetensors", root / "tiny.safetensors")
    _damaged_bundles(bundle, root)
    _engine_folder(bundle, root)
    return root


def _damaged_bundles(bundle, root: Path) -> None:
    """Copies of the tiny bundle, each broken in one way."""
    for name in ("notjson", "schema", "nograph", "noref", "truncated"):
        shutil.copytree(bundle.path, root / name, ignore=shutil.ignore_patterns("engines", "precision"))
    (root / "notjson" / "manifest.json").write_text("{not json")
    manifest = json.loads((root / "schema" / "manifest.json").read_text())
    (root / "schema" / "manifest.json").write_text(json.dumps(manifest | {"schema_version": 99}))
    (root / "nograph" / "encoder.onnx").unlink()
    (root / "noref" / "reference.npz").unlink()
    data = (root / "truncated" / "tokenizer.onnx").read_bytes()
    (root / "truncated" / "tokenizer.onnx").write_bytes(data[: len(data) // 2])


def _engine_folder(bundle, root: Path) -> None:
    """An FP32 engine folder ({f}/engine) of a copy of the tiny bundle ({f}/enginebundle)."""
    from msvit_edge.build import BuildConfig, build

    shutil.copytree(bundle.path, root / "enginebundle", ignore=shutil.ignore_patterns("engines", "precision"))
    build(BuildConfig(str(root / "enginebundle"), "fp32", "onnxruntime", out=str(root / "engine")))


CASES = [
    # train
    (["train", "--stage", "gate"], USAGE, "'--stage': 'gate' is not one of 'backbone', 'msvit'"),
    (["train", "--fine-target", "1.5"], USAGE, "gBaS: target must be in (0, 1), got 1.5"),
    (["train", "--val-size", "0"], USAGE, "--val-size must be >= 1"),
    (["train", "--lr", "0"], USAGE, "--lr must be > 0"),
    (["train", "--epochs", "0"], USAGE, "Invalid value for '--epochs'"),
    (["train", "--init", "{f}/missing.pth"], FAILED, "{f}/missing.pth: checkpoint not found"),
    (["train", "--init", "{f}"], FAILED, "{f}: is a folder, not a checkpoint file"),
    (["train", "--init", "{f}/evil.pth"], FAILED, "evil.pth: holds pickled objects beyond tensors"),
    (["train", "--resume", "--out", "{f}/resume"], FAILED, "state.pt: holds pickled objects beyond tensors"),
    (["train", "--out", "{f}/blocker/run"], FAILED, "{f}/blocker: cannot create the output folder"),
    (["train", "--data", "{f}/nothing-here"], FAILED, "{f}/nothing-here: not a dataset"),
    (["train", "--data", "{f}/cifar100.npz", "--val-size", "10"], FAILED, "100 classes but the model has 10 outputs"),
    (["train", "--device", "cuda"], FAILED, "--device cuda: no CUDA GPU is available"),
    # eval
    (["eval", "--ckpt", "{f}"], FAILED, "{f}: is a folder, not a checkpoint file"),
    (["eval", "--ckpt", "{f}/deit.pth"], FAILED, "deit.pth: not an msvit-edge checkpoint: a plain ViT/DeiT one"),
    (["eval", "--device", "cuda"], FAILED, "--device cuda: no CUDA GPU is available"),
    (["eval", "--device", "gpu"], FAILED, "--device gpu: not a device"),
    (["eval", "--data", "{f}/empty.npz"], FAILED, "empty.npz: holds no images"),
    (["eval", "--data", "{f}/nan.npz"], FAILED, "nan.npz: float images hold 1 NaN or infinite values"),
    (["eval", "--data", "{f}/image.png"], FAILED, "image.png: not a dataset"),
    (["eval", "--limit", "0"], USAGE, "Invalid value for '--limit'"),
    (
        ["eval", "--split", "tset", "--data", "{f}/few.npz"],
        USAGE,
        "'--split': 'tset' is not one of 'train', 'test', 'val'",
    ),
    (
        ["eval", "--out", "{f}/existing"],
        FAILED,
        "{f}/existing: is not an eval report that msvit-edge wrote (it holds notes.txt)",
    ),
    # export
    (["export", "--ckpt", "{f}/missing.safetensors"], FAILED, "{f}/missing.safetensors: checkpoint not found"),
    (["export", "--ckpt", "{f}/deit.pth"], FAILED, "deit.pth: not an msvit-edge checkpoint: a plain ViT/DeiT one"),
    (["export", "--calib", "{f}/empty.npz"], FAILED, "empty.npz: holds no images"),
    (["export", "--calib", "{f}/nan.npz"], FAILED, "nan.npz: float images hold 1 NaN or infinite values"),
    (
        ["export", "--ckpt", "{f}/tiny.safetensors", "--calib", "{f}/few.npz", "--buckets", "40"],
        FAILED,
        "cannot plan 40 buckets from",
    ),
    (["export", "--preset", "vit_small_patch16_224"], USAGE, "--preset builds a model with random weights"),
    (
        ["export", "--preset", "vit_demo_patch8_80", "--random-weights"],
        FAILED,
        "the untrained gate gives 1 distinct token count(s) for 5 buckets: pass --fine-fraction",
    ),
    (["export", "--fine-fraction", "1.5"], USAGE, "--fine-fraction must be in (0, 1), got 1.5"),
    (["export", "--simplifier", "magic"], USAGE, "--simplifier must be one of onnxslim, onnxsim, none, got 'magic'"),
    (["export", "--out", "{f}/existing"], FAILED, "{f}/existing: is not an export bundle that msvit-edge wrote"),
    (["export", "--out", "{f}/blocker"], FAILED, "{f}/blocker: output path exists and is not a folder"),
    # build
    (["build", "--bundle", "{b}", "--precision", "int4"], USAGE, "'--precision': 'int4' is not one of 'fp32'"),
    (["build", "--bundle", "{b}", "--backend", "openvino"], USAGE, "'openvino' is not one of 'auto', 'onnxruntime'"),
    (["build", "--bundle", "{b}", "--opt-level", "9"], USAGE, "--opt-level must be in 0..5, got 9"),
    (["build", "--bundle", "{b}", "--backend", "tensorrt"], FAILED, ".[tensorrt]"),
    (["build", "--bundle", "{f}/nowhere"], FAILED, "{f}/nowhere: not an export bundle (no manifest.json)"),
    (["build", "--bundle", "{f}/notjson"], FAILED, "manifest.json: manifest is not valid JSON"),
    (["build", "--bundle", "{f}/schema"], FAILED, "schema_version is 99, this msvit-edge reads 1 or 2"),
    (["build", "--bundle", "{f}/nograph"], FAILED, "encoder.onnx"),
    (["build", "--bundle", "{f}/noref"], FAILED, "no reference.npz"),
    (["build", "--bundle", "{f}/truncated"], FAILED, "tokenizer.onnx"),
    (
        ["build", "--bundle", "{f}/engine"],
        FAILED,
        "{f}/engine: this is an engine folder; pass its bundle ({f}/enginebundle) or use it as a bench source",
    ),
    (["build", "--bundle", "{b}", "--precision", "int8", "--calib", "{f}/few.npz"], FAILED, "calibration images"),
    (
        ["build", "--bundle", "{b}", "--precision", "int8", "--calib-images", "100"],
        USAGE,
        "--calib-images must be >= 128",
    ),
    # bench
    (["bench", "{b}", "--device", "jetson"], FAILED, "/etc/nv_tegra_release"),
    (["bench", "{b}", "--device", "tpu"], USAGE, "'--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["bench", "{b}", "--batch", "1,x"], USAGE, "--batch takes comma-separated numbers"),
    (["bench", "{b}", "--thresholds", "2"], USAGE, "--thresholds must be in [0, 1]"),
    (["bench", "{b}", "--data", "{f}/emptydir"], FAILED, "{f}/emptydir"),
    (["bench", "{f}/nowhere"], FAILED, "{f}/nowhere: not an export bundle"),
    (["bench", "{f}/notjson"], FAILED, "manifest is not valid JSON"),
    (["bench", "{b}", "--out", "{f}/existing"], FAILED, "{f}/existing: is not a bench report that msvit-edge wrote"),
    # demo and the command line itself
    (["demo", "--out", "{f}/existing", "--force"], FAILED, "{f}/existing: is not a demo folder that msvit-edge wrote"),
    (["deploy"], USAGE, "No such command 'deploy'"),
    (["build", "--fast"], USAGE, "No such option: --fast"),
]


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``msvit-edge ARGV`` in this process; returns the exit code and stderr."""
    from msvit_edge.cli.app import main

    saved = sys.argv
    sys.argv = ["msvit-edge", *argv]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved
    return code, capsys.readouterr().err


def snapshot(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv, code, message", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input(files, bundle, tmp_path, capsys, monkeypatch, argv, code, message):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    if "tensorrt" in argv:
        _without_tensorrt(monkeypatch)
    monkeypatch.chdir(tmp_path)  # default outputs (runs/, bundle) land here, where the test can see them
    fill = {"{f}": str(files), "{b}": str(bundle.path)}
    argv = [_fill(a, fill) for a in argv]
    before = snapshot(files), snapshot(bundle.path)
    exit_code, stderr = run(argv, capsys)
    lines = stderr.strip().splitlines()
    assert exit_code == code and "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in lines if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1 and _fill(message, fill) in errors[0], stderr[-2000:]
    if code == FAILED:
        assert len(lines) == 1 or "--skip-corrupt" in argv, stderr
    assert (snapshot(files), snapshot(bundle.path)) == before  # nothing written, no payload run
    assert list(tmp_path.iterdir()) == []  # no runs/ either: bench checks its inputs before making its report folder


def _without_tensorrt(monkeypatch) -> None:
    """Make this process a machine without TensorRT, whatever this one has: no module, no version."""
    from msvit_edge.machine import environment

    find_spec = importlib.util.find_spec

    def hidden(name, *args, **kwargs):
        return None if name.partition(".")[0] == "tensorrt" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    monkeypatch.setattr(environment, "tensorrt_version", lambda: None)


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text
