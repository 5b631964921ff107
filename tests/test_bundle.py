"""The bundle contract: its manifest and graphs are checked when it is opened; pixels are checked, and photos
loaded as training loaded them, without PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msvit_edge.bundle import Bundle
from msvit_edge.bundle.preprocess import resize_rule
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256


def copy_bundle(bundle: Bundle, folder: Path) -> Path:
    """The bundle's own files (not engine folders other tests build in it), to damage freely."""
    folder.mkdir()
    for f in bundle.path.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    return folder


def edit_manifest(folder: Path, change) -> Path:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(change(manifest)))
    return path


@pytest.fixture(scope="module")
def other_bundle(workdir, tmp_path_factory) -> Bundle:
    """A bundle of another model (width 16 where the tiny model has 32), exported from the same data."""
    import torch

    from msvit_edge.export import ExportConfig, export
    from msvit_edge.model.checkpoint import save_checkpoint
    from msvit_edge.model.config import MSViTConfig, ViTConfig
    from msvit_edge.model.msvit import MSViT

    root = tmp_path_factory.mktemp("other")
    torch.manual_seed(0)
    vit = ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=16, depth=1, num_heads=2)
    save_checkpoint(MSViT(MSViTConfig(vit)), root / "other.safetensors")
    cfg = ExportConfig(
        out=str(root / "bundle"),
        ckpt=str(root / "other.safetensors"),
        buckets=1,
        calib=str(workdir / "fmnist.npz"),
        calib_images=50,
        val_images=4,
    )
    return export(cfg)


@pytest.mark.parametrize("graph, damage", [("tokenizer", "truncated"), ("encoder", "empty")])
def test_a_damaged_graph_is_one_line_naming_the_file(bundle, tmp_path, graph, damage):
    from msvit_edge.engines.ort import OnnxRuntimePipeline

    folder = copy_bundle(bundle, tmp_path / "bundle")
    opened = Bundle(folder)
    path = folder / f"{graph}.onnx"
    path.write_bytes(path.read_bytes()[:1000] if damage == "truncated" else b"")  # damaged after it was opened
    with pytest.raises(MsvitEdgeError) as err:
        OnnxRuntimePipeline(opened).__enter__()
    assert str(err.value).startswith(f"{path}: ONNX Runtime cannot load this graph (") and "\n" not in str(err.value)
    with pytest.raises(MsvitEdgeError) as err:
        Bundle(folder)  # opened again: its sha256 no longer matches the manifest's
    assert str(err.value).startswith(f"{path}: is not the graph the manifest describes (sha256 differs)")


def test_the_manifest_records_each_graphs_sha256(bundle):
    for name, entry in bundle.manifest["graphs"].items():
        assert entry["sha256"] == sha256(bundle.graph(name))


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: [], "it is an array, not an object"),
        (lambda m: {"schema_version": 1}, "no 'model'"),
        (lambda m: m | {"schema_version": 2}, "schema_version is 2, this msvit-edge reads 1"),
        (lambda m: {k: v for k, v in m.items() if k != "buckets"}, "no 'buckets'"),
        (lambda m: m | {"threshold": "0.5"}, "'threshold' is a string, not a number"),
        (lambda m: m | {"threshold": 1.5}, "threshold 1.5 is not in [0, 1]"),
        (lambda m: m | {"buckets": {"buckets": []}}, "'buckets' is not a bucket plan (KeyError: 'histogram')"),
        (lambda m: m | {"graphs": {"tokenizer": m["graphs"]["tokenizer"]}}, "'graphs' lacks encoder, encoder_masked"),
        (lambda m: m | {"preprocessing": m["preprocessing"] | {"std": [0, 1, 1]}}, "std > 0"),
        (lambda m: m | {"preprocessing": m["preprocessing"] | {"size": "32"}}, "size must be a positive integer"),
    ],
)
def test_a_malformed_manifest_is_refused_when_opened_saying_what_is_wrong(bundle, tmp_path, change, problem):
    manifest = edit_manifest(copy_bundle(bundle, tmp_path / "bundle"), change)
    with pytest.raises(MsvitEdgeError) as err:
        Bundle(manifest.parent)
    assert str(err.value).startswith(f"{manifest}: not a usable bundle manifest: ") and problem in str(err.value)


def test_a_manifest_from_another_model_is_refused(bundle, other_bundle, tmp_path):
    folder = copy_bundle(bundle, tmp_path / "bundle")
    shutil.copy(other_bundle.path / "manifest.json", folder / "manifest.json")
    with pytest.raises(MsvitEdgeError, match="sha256 differs"):
        Bundle(folder)

    def without_sha256(m: dict) -> dict:  # as bundles were before the manifest recorded it: checked by I/O
        m["graphs"] = {name: {k: v for k, v in g.items() if k != "sha256"} for name, g in m["graphs"].items()}
        return m

    edit_manifest(folder, without_sha256)
    graph, manifest = r"graph .*tokens \[batch, 81, 32\]", r"manifest .*tokens \[batch, 81, 16\]"
    with pytest.raises(MsvitEdgeError, match=rf"tokenizer.onnx: does not match the manifest \({graph}.*; {manifest}"):
        Bundle(folder)
    edit_manifest(folder, lambda m: without_sha256(json.loads((bundle.path / "manifest.json").read_text())))
    assert Bundle(folder).threshold == bundle.threshold  # its own manifest, by I/O alone, still opens


@pytest.mark.parametrize(
    "images, problem",
    [
        (np.zeros((1, 333, 517, 3), np.uint8), "images are 333x517 with 3 channels; the model takes 32x32 with 3"),
        (np.zeros((2, 32, 32, 1), np.uint8), "images are 32x32 with 1 channels; the model takes 32x32 with 3"),
        (np.zeros((2, 32, 32, 3), np.float32), "images must be uint8 [B, H, W, C], got float32 [2, 32, 32, 3]"),
        (np.zeros((32, 32, 3), np.uint8), "add the batch dimension"),
        ([[0]], "images must be a numpy uint8 array [B, H, W, C], got a list"),
    ],
)
def test_preprocess_refuses_what_the_tokenizer_cannot_take(bundle, images, problem):
    with pytest.raises(MsvitEdgeError) as err:
        bundle.preprocess(images)
    assert problem in str(err.value) and "\n" not in str(err.value)


def write_photos(folder: Path) -> list[Path]:
    """An ImageFolder of awkward photos: not square, transparent, 16-bit, palette."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "a").mkdir(parents=True)
    photos = {
        "wide.png": Image.fromarray(rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)),
        "alpha.png": Image.fromarray(rng.integers(0, 256, (40, 90, 4), dtype=np.uint8)),
        "deep.png": Image.fromarray(rng.integers(0, 65536, (50, 30), dtype=np.uint16)),
        "palette.png": Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).convert("P"),
    }
    for name, image in photos.items():
        image.save(folder / "a" / name)
    return sorted((folder / "a").iterdir())


LOAD_WITHOUT_TORCH = """
import sys, hashlib
sys.modules["torch"] = None  # any import of torch now fails, as on a Jetson without PyTorch
from msvit_edge.bundle import Bundle
x = Bundle(sys.argv[1]).load_images(sys.argv[2:])
print(x.shape, x.dtype, hashlib.sha256(x.tobytes()).hexdigest())
"""


def test_photos_load_without_pytorch_exactly_as_training_loaded_them(bundle, tmp_path):
    import hashlib

    from msvit_edge.data import ImageFolderDataset

    paths = write_photos(tmp_path / "photos")
    pre = bundle.manifest["preprocessing"]
    assert pre["resize"] == resize_rule(32) == bundle.resize  # data, not prose
    pixels = bundle.load_images(paths)
    training = ImageFolderDataset(tmp_path / "photos", pre["size"], pre["mean"], pre["std"])
    assert [p for p, _ in training.samples] == paths and pixels.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(bundle.preprocess(pixels), np.stack([x.numpy() for x, _ in training]))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TORCH, str(bundle.path), *map(str, paths)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(4,", "32,", "32,", "3)", "uint8", hashlib.sha256(pixels.tobytes()).hexdigest()]


def test_a_manifest_with_the_older_prose_resize_rule_still_loads_photos(bundle, tmp_path):
    folder = copy_bundle(bundle, tmp_path / "bundle")
    prose = "ImageFolder: shorter side to size, bicubic, centre crop; npz/IDX: bilinear, antialiased"
    edit_manifest(folder, lambda m: m | {"preprocessing": m["preprocessing"] | {"resize": prose}})
    paths = write_photos(tmp_path / "photos")
    np.testing.assert_array_equal(Bundle(folder).load_images(paths), bundle.load_images(paths))
