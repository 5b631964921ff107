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


def edit_manifest_file(path: Path, change) -> Path:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return path


def without_sha256(m: dict) -> dict:
    """``m`` as bundles of schema 1 could be, before the manifest recorded graph digests."""
    m["graphs"] = {name: {k: v for k, v in g.items() if k != "sha256"} for name, g in m["graphs"].items()}
    return m


def edit_manifest(folder: Path, change) -> Path:
    return edit_manifest_file(folder / "manifest.json", change)


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
        (lambda m: m | {"schema_version": 3}, "schema_version is 3, this msvit-edge reads 1 or 2"),
        (lambda m: m | {"schema_version": True}, "schema_version is True, this msvit-edge reads 1 or 2"),
        (lambda m: {k: v for k, v in m.items() if k != "buckets"}, "no 'buckets'"),
        (lambda m: m | {"threshold": "0.5"}, "'threshold' is a string, not a number"),
        (lambda m: m | {"threshold": 1.5}, "threshold 1.5 is not in [0, 1]"),
        (lambda m: m | {"buckets": {"buckets": []}}, "'buckets' is not a bucket plan (KeyError: 'histogram')"),
        (lambda m: m | {"graphs": {"tokenizer": m["graphs"]["tokenizer"]}}, "'graphs' lacks encoder, encoder_masked"),
        (lambda m: m | {"preprocessing": m["preprocessing"] | {"std": [0, 1, 1]}}, "std > 0"),
        (lambda m: m | {"preprocessing": m["preprocessing"] | {"size": "32"}}, "size must be a positive integer"),
        (lambda m: m | {"latency_only": "no"}, "'latency_only' is a string, not a boolean"),
        (lambda m: m | {"validation": []}, "'validation' is an array, not an object"),
        (lambda m: m | {"buckets": m["buckets"] | {"expected_overhead": "6%"}}, "'buckets' is not a bucket plan"),
        (lambda m: without_sha256(m), "graphs.tokenizer needs its 'file' and 'sha256' (schema 2)"),
        (lambda m: m | {"preprocessing": m["preprocessing"] | {"resize": "bicubic"}}, "resize must be the resize rule"),
        (lambda m: m | {"graphs": m["graphs"] | {"vit": {"inputs": [{}], "outputs": []}}}, "graphs.vit: every"),
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

    edit_manifest(folder, lambda m: without_sha256(m) | {"schema_version": 1})  # a schema 1 bundle: checked by I/O
    graph, manifest = r"graph .*tokens \[batch, 81, 32\]", r"manifest .*tokens \[batch, 81, 16\]"
    with pytest.raises(MsvitEdgeError, match=rf"tokenizer.onnx: does not match the manifest \({graph}.*; {manifest}"):
        Bundle(folder)
    own = json.loads((bundle.path / "manifest.json").read_text())
    edit_manifest(folder, lambda m: without_sha256(own) | {"schema_version": 1})
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
    edit_manifest(folder, lambda m: m | {"schema_version": 1, "preprocessing": m["preprocessing"] | {"resize": prose}})
    paths = write_photos(tmp_path / "photos")
    np.testing.assert_array_equal(Bundle(folder).load_images(paths), bundle.load_images(paths))


# ---- records: one reader and one writer each; files of the previous version still open ------------------------

PREVIOUS = Path(__file__).parent / "data" / "previous" / "bundle"  # see tests/data/previous/SOURCES.md


@pytest.fixture
def previous(tmp_path) -> Path:
    """A copy of the stored bundle of schema 1, with its engine folders of schema 2 and its INT8 graph set."""
    shutil.copytree(PREVIOUS, tmp_path / "bundle")
    return tmp_path / "bundle"


def test_a_bundle_of_the_previous_schema_opens_converted_and_runs(previous):
    from msvit_edge.engines.ort import OnnxRuntimePipeline

    raw = json.loads((previous / "manifest.json").read_text())
    assert raw["schema_version"] == 1
    opened = Bundle(previous)
    assert opened.manifest == raw | {"schema_version": 2} and opened.id == sha256(previous / "manifest.json")
    assert all(g.sha256 == sha256(opened.graph(name)) for name, g in opened.record.graphs.items())
    assert opened.record.preprocessing.resize == resize_rule(32) and opened.record.planned_on == "calib.npz"
    ref = opened.reference()
    with OnnxRuntimePipeline(opened) as pipe:
        out = pipe(opened.preprocess(ref.images), opened.threshold)
    np.testing.assert_array_equal(out.counts, ref.counts)
    np.testing.assert_allclose(out.logits, ref.logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["onnxruntime-fp32", "onnxruntime-int8"])
def test_an_engine_folder_of_the_previous_schema_opens_converted(previous, name):
    from msvit_edge.bundle.engine_folder import SCHEMA_VERSION, EngineDir, open_source

    folder = previous / "engines" / name
    raw = json.loads((folder / "manifest.json").read_text())
    engine = open_source(folder)
    assert isinstance(engine, EngineDir) and raw["schema_version"] == 2 and SCHEMA_VERSION == 3
    assert engine.manifest == raw | {"schema_version": 3}  # converted: nothing lost
    assert engine.record.files == raw["files"] and engine.bundle.id == engine.record.bundle.sha256
    assert engine.plan == engine.bundle.plan and engine.record.device.slug == raw["device"]["slug"]
    if name.endswith("int8"):
        assert engine.record.calibration["calibration"]["images"] == 160
        assert engine.graph("encoder").parent.parent.name == "precision"


def test_a_precision_graph_set_of_the_previous_facts_version_opens(previous):
    from msvit_edge.calibration.facts import PrecisionFacts
    from msvit_edge.calibration.precision import open_graphs

    folder = next((previous / "precision").iterdir())
    raw = json.loads((folder / "facts.json").read_text())
    made = open_graphs(folder)
    assert "schema_version" not in raw and made.facts == raw | {"schema_version": 1}
    facts = made.record
    assert facts.precision == "int8" and facts.calibration.images == 160 and sorted(facts.files) == sorted(raw["files"])
    assert [c.images for c in facts.calibration.coverage] == [c["images"] for c in raw["calibration"]["coverage"]]
    assert PrecisionFacts.from_dict(facts.to_dict()) == facts
    assert set(made.graphs) == {"encoder", "encoder_masked", "vit"}


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda f: f | {"precision": "int4"}, "not the facts of a precision graph set"),
        (lambda f: f | {"schema_version": 7}, "schema_version is 7, this msvit-edge reads 0 or 1"),
        (lambda f: f | {"files": {"encoder.int8.onnx": 1}}, "'files' must map graph files to their sha256"),
        (lambda f: f | {"calibration": {"images": 160}}, "'calibration' needs images, images_sha256, coverage"),
    ],
)
def test_malformed_precision_facts_are_refused_naming_the_file(previous, change, problem):
    from msvit_edge.calibration.precision import open_graphs

    folder = next((previous / "precision").iterdir())
    edited = edit_manifest_file(folder / "facts.json", change)
    with pytest.raises(MsvitEdgeError) as err:
        open_graphs(folder)
    assert str(err.value).startswith(f"{edited}: not the facts of a precision graph set") and problem in str(err.value)


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: m | {"schema_version": 4}, "engine schema 4 is not one of (1, 2, 3)"),
        (lambda m: m | {"kind": "other"}, "not an engine manifest (kind is not msvit-edge-engine)"),
        (lambda m: {k: v for k, v in m.items() if k != "files"}, "engine manifest needs 'files' (dict)"),
        (lambda m: m | {"device": {"description": "no slug"}}, "engine manifest needs 'device.slug' (str)"),
        (lambda m: m | {"bundle": {"path": "../.."}}, "needs 'bundle.path' and 'bundle.sha256' (str)"),
        (lambda m: m | {"graphs": {"encoder": 3}}, "'graphs' and 'files' must map names to strings"),
        (lambda m: m | {"key": 3}, "engine manifest's 'key' must be a str or absent"),
        (lambda m: m | {"buckets": {"buckets": []}}, "engine manifest: 'buckets' is not a bucket plan"),
    ],
)
def test_a_malformed_engine_manifest_is_refused_naming_the_file(previous, change, problem):
    from msvit_edge.bundle.engine_folder import EngineDir

    edited = edit_manifest_file(previous / "engines" / "onnxruntime-fp32" / "manifest.json", change)
    with pytest.raises(MsvitEdgeError) as err:
        EngineDir(edited.parent)
    assert str(err.value).startswith(f"{edited}: ") and problem in str(err.value)


def test_an_engine_manifest_of_schema_1_opens_with_a_warning(previous):
    from msvit_edge.bundle.engine_folder import EngineDir

    folder = previous / "engines" / "onnxruntime-fp32"
    edit_manifest_file(
        folder / "manifest.json", lambda m: {k: v for k, v in m.items() if k != "files"} | {"schema_version": 1}
    )
    with pytest.warns(UserWarning, match="recorded no file digests"):
        engine = EngineDir(folder)
    assert engine.record.files is None and "files" not in engine.manifest


def test_records_write_what_they_read(bundle, previous):
    from msvit_edge.bundle import BundleManifest
    from msvit_edge.bundle.engine_manifest import EngineManifest

    assert bundle.record.to_dict() == json.loads((bundle.path / "manifest.json").read_text())  # this version's
    assert BundleManifest.from_dict(bundle.record.to_dict()) == bundle.record
    assert BundleManifest.from_file(bundle.path / "manifest.json") == bundle.record
    engine = EngineManifest.from_file(previous / "engines" / "onnxruntime-int8" / "manifest.json")
    assert EngineManifest.from_dict(engine.to_dict()) == engine
    engine.write(previous / "manifest.written.json")
    assert EngineManifest.from_file(previous / "manifest.written.json") == engine


def test_opening_an_engine_folder_reads_and_checks_each_manifest_once(previous, monkeypatch):
    from msvit_edge.bundle import engine_manifest, manifest
    from msvit_edge.bundle.engine_folder import open_source
    from msvit_edge.engines.ort import OnnxRuntimePipeline

    reads, checks = [], []
    real_open = Path.open

    def counted(path, *args, **kwargs):  # read_bytes and read_text open the file through it
        if path.name == "manifest.json":
            reads.append(path.resolve())
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    for module in (manifest, engine_manifest):
        real = module.manifest_problem
        monkeypatch.setattr(module, "manifest_problem", lambda m, _real=real: checks.append(m) or _real(m))
    folder = previous / "engines" / "onnxruntime-int8"
    for opened in (lambda: open_source(folder), lambda: OnnxRuntimePipeline(folder)):
        reads.clear(), checks.clear()
        engine = opened()
        engine = getattr(engine, "source", engine)
        assert sorted(reads) == sorted([(folder / "manifest.json").resolve(), (previous / "manifest.json").resolve()])
        assert len(checks) == 2 and engine.bundle.record is not None
