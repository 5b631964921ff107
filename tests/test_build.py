"""build for real on the tiny bundle: ONNX Runtime engines at fp32/fp16/int8 (ModelOpt AutoCast and Q/DQ),
validation recorded, the engine cache, refusals, and the Jetson path that builds from a workstation's graphs."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from msvit_edge import build as build_module
from msvit_edge.build import BuildConfig, build
from msvit_edge.bundle.engine_folder import EngineDir
from msvit_edge.engines import open_pipeline
from msvit_edge.errors import MsvitEdgeError


@pytest.fixture(scope="module")
def bundle(bundle, copy_bundle):
    """This module's own copy: it writes engines and precision graphs into it."""
    return copy_bundle(bundle)


@pytest.fixture(scope="module")
def engines(bundle, workdir, tmp_path_factory):
    """fp32, fp16 and int8 ONNX Runtime engine directories of the tiny bundle (calibrated on its 400 images)."""
    root = tmp_path_factory.mktemp("engines")
    made = {}
    for precision in ("fp32", "fp16", "int8"):
        cfg = BuildConfig(
            str(bundle.path), precision, "onnxruntime", str(workdir / "fmnist.npz"), 200, str(root / precision)
        )
        made[precision] = build(cfg)
    return made


def op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_each_precision_is_validated_with_identical_token_counts(engines):
    for precision, engine in engines.items():
        v = engine.record.validation
        assert engine.precision == precision and engine.backend == "onnxruntime"
        assert v["batch1"]["counts_equal"] and v["batched"]["counts_equal"]
        assert engine.record.tolerance == build_module.validation.tolerance_dict(precision)
    assert engines["fp32"].record.validation["batch1"]["logits"]["max_abs"] <= 1e-4


def test_engine_manifests_hold_no_path_of_the_building_machine(engines, workdir, tmp_path_factory):
    """The calibration data is recorded by name, like export's: where it lay means nothing on another machine."""
    for engine in engines.values():
        text = (engine.path / "manifest.json").read_text()
        assert str(workdir) not in text and str(tmp_path_factory.getbasetemp()) not in text
    assert engines["int8"].record.build["calib"] == "fmnist.npz"


def test_the_engine_manifest_is_its_record_as_written(engines):
    from msvit_edge.bundle.engine_manifest import SCHEMA_VERSION, EngineManifest

    for engine in engines.values():
        written = json.loads((engine.path / "manifest.json").read_text())
        assert written["schema_version"] == SCHEMA_VERSION and engine.record.to_dict() == written
        assert EngineManifest.from_dict(written) == engine.record and engine.record.bundle.sha256 == engine.bundle.id
    assert engines["fp32"].record.calibration == {} and engines["int8"].record.calibration["schema_version"] == 1


def test_int8_and_fp16_run_changed_encoders_and_the_fp32_tokenizer(engines, bundle):
    int8, fp16 = engines["int8"], engines["fp16"]
    assert int8.graph("tokenizer").resolve() == bundle.graph("tokenizer").resolve()
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(int8.graph("encoder"))
    assert "QuantizeLinear" not in op_types(bundle.graph("encoder"))
    fp16_encoder = onnx.load(str(fp16.graph("encoder")))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16_encoder.graph.initializer)
    assert int8.record.calibration["calibration"]["images"] == 200
    assert "QuantizeLinear" in op_types(int8.graph("vit"))  # bench's plain ViT runs at the engine's precision


def test_precision_graphs_live_in_the_bundle_in_a_keyed_folder_and_engines_find_them_by_relative_path(engines, bundle):
    engine = engines["int8"]
    entry = engine.record.graphs["encoder"]
    folder = (engine.path / entry).resolve().parent
    assert not entry.startswith("/") and folder.parent == bundle.path.resolve() / "precision"
    assert folder.name == f"onnxruntime-int8-{engine.record.calibration['cache_key'][:12]}"
    assert set(engine.record.files) == set(engine.record.graphs.values())


def test_a_second_calibration_never_changes_what_the_first_engine_runs(engines, bundle, workdir, tmp_path):
    """Engine A calibrated on 200 images, engine B on 150: A still runs A's graphs and gives A's numbers."""
    a = engines["int8"]
    before = {f: (a.path / f).read_bytes() for f in a.record.files}
    b = build(
        BuildConfig(str(bundle.path), "int8", "onnxruntime", str(workdir / "fmnist.npz"), 150, str(tmp_path / "b"))
    )
    assert b.record.graphs["encoder"] != a.record.graphs["encoder"]
    assert {f: (a.path / f).read_bytes() for f in a.record.files} == before
    ref = bundle.reference()
    with open_pipeline(a.path) as pipe:  # the validation's batched mode, again
        outs = [
            pipe(bundle.preprocess(ref.images[i : i + 32]), bundle.threshold) for i in range(0, len(ref.images), 32)
        ]
    logits = np.concatenate([o.logits for o in outs])
    recorded = a.record.validation["batched"]["logits"]
    assert np.abs(logits - ref.logits).max() == pytest.approx(recorded["max_abs"], rel=1e-6)


def test_an_engine_folder_whose_files_changed_is_refused_in_one_line_naming_the_file(bundle, workdir, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(bundle.path, folder, ignore=shutil.ignore_patterns("engines", "precision"))
    cfg = BuildConfig(str(folder), "int8", "onnxruntime", str(workdir / "fmnist.npz"), 200)
    engine = build(cfg)  # the calibration cache holds these graphs: no calibration runs
    graph = (engine.path / engine.record.graphs["encoder"]).resolve()
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1  # the last byte: the graph still parses
    graph.write_bytes(bytes(data))
    message = rf"{graph}: is not the file this engine folder was built and validated with \(sha256 differs"
    with pytest.raises(MsvitEdgeError, match=message):
        open_pipeline(engine.path)
    with pytest.raises(MsvitEdgeError, match=rf"{graph}: is not the graph .*\(sha256 differs\)"):
        build(cfg)  # the same build again: its precision graphs are checked first
    result = subprocess.run(
        [sys.executable, "-m", "msvit_edge", "bench", str(engine.path), "--out", str(tmp_path / "r"), "--iters", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and str(graph) in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["build", "export", "bench", "eval", "demo"])
def test_force_never_replaces_a_folder_msvit_edge_did_not_write(bundle, tmp_path, command):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    args = {
        "build": ["build", "--bundle", str(bundle.path)],
        "export": ["export", "--ckpt", "nothing-needed"],
        "bench": ["bench", str(bundle.path)],
        "eval": ["eval"],
        "demo": ["demo"],
    }[command]
    result = subprocess.run(
        [sys.executable, "-m", "msvit_edge", *args, "--out", str(user), "--force"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert f"{user}: is not " in result.stderr and "that msvit-edge wrote (it holds notes.txt)" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"] and (user / "notes.txt").read_text() == "my notes"


def test_a_second_identical_build_reuses_the_engine(engines, bundle, workdir, caplog):
    engine = engines["int8"]
    before = (engine.path / "manifest.json").stat().st_mtime_ns
    cfg = BuildConfig(str(bundle.path), "int8", "onnxruntime", str(workdir / "fmnist.npz"), 200, str(engine.path))
    with caplog.at_level(logging.INFO, logger="msvit_edge"):
        again = build(cfg)
    assert any("reused" in line for line in caplog.messages) and again.record.key == engine.record.key
    assert (engine.path / "manifest.json").stat().st_mtime_ns == before


def test_other_calibration_images_are_another_build_refused_without_force(engines, bundle, workdir):
    engine = engines["int8"]
    cfg = BuildConfig(str(bundle.path), "int8", "onnxruntime", str(workdir / "fmnist.npz"), 150, str(engine.path))
    with pytest.raises(MsvitEdgeError, match=r"holds an engine built from other inputs .*: pass --force to replace it"):
        build(cfg)


def test_an_engine_dir_runs_through_open_pipeline(engines, bundle):
    ref = bundle.reference()
    with open_pipeline(engines["fp16"].path) as pipe:
        out = pipe(bundle.preprocess(ref.images[:8]), bundle.threshold)
    assert out.counts.tolist() == ref.counts[:8].tolist()
    assert (out.logits.argmax(1) == ref.logits[:8].argmax(1)).mean() >= 0.875


def test_an_engine_for_another_device_is_refused(engines):
    engine = engines["fp32"]
    with pytest.raises(MsvitEdgeError, match=r"built for device cpu-.*, this is jetson-agx-thor; rebuild it here"):
        engine.check_runs_here(engine.record.backend_version, "jetson-agx-thor")


def test_an_engine_whose_bundle_changed_is_refused(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy, ignore=shutil.ignore_patterns("engines", "precision"))
    engine = build(BuildConfig(str(copy), "fp32", "onnxruntime"))
    EngineDir(engine.path)  # opens while the bundle is the one it was built from
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"threshold": 0.9}))
    with pytest.raises(MsvitEdgeError, match="built for another bundle"):
        EngineDir(engine.path)


def test_failed_validation_leaves_no_engine_folder(bundle, workdir, tmp_path, monkeypatch):
    strict = build_module.validation.Tolerance(atol=0.0, min_agreement=1.0, max_accuracy_drop=0.0)
    monkeypatch.setitem(build_module.validation.TOLERANCES, "fp32", strict)
    out = tmp_path / "engine"
    with pytest.raises(MsvitEdgeError, match=r"validation failed \(batch1\): onnxruntime fp32 logits max abs diff"):
        build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(out)))
    assert list(tmp_path.iterdir()) == []


def test_a_jetson_without_modelopt_builds_from_the_graphs_a_workstation_made(bundle, workdir, monkeypatch):
    cfg = BuildConfig(str(bundle.path), "fp16", "onnxruntime", graphs_only=True)
    folder = build(cfg)
    assert folder.parent == bundle.path / "precision" and folder.name.startswith("onnxruntime-fp16-")
    monkeypatch.setattr(build_module, "_can_make_graphs", lambda: False)
    made = build_module.precision_graphs(bundle, cfg, "onnxruntime")
    assert made.graphs["encoder"] == folder / "encoder.fp16.onnx" and made.record.precision == "fp16"
    assert made.graphs["tokenizer"] == bundle.graph("tokenizer")
    missing = BuildConfig(str(bundle.path), "int8", "tensorrt")
    with pytest.raises(MsvitEdgeError, match=r"--backend tensorrt --precision int8 --graphs-only"):
        build_module.precision_graphs(bundle, missing, "tensorrt")
    other = folder.with_name("onnxruntime-fp16-000000000000")
    shutil.copytree(folder, other)  # a second set: which one is meant is no longer clear
    with pytest.raises(MsvitEdgeError, match=r"holds 2 onnxruntime fp16 graph sets .*: pick one with --graphs"):
        build_module.precision_graphs(bundle, cfg, "onnxruntime")
    chosen = dataclasses.replace(cfg, graphs=str(other))
    assert build_module.precision_graphs(bundle, chosen, "onnxruntime").folder == other
    shutil.rmtree(other)


@pytest.mark.parametrize(
    "tensorrt, gpu, expected",
    [
        (False, True, ("onnxruntime", "TensorRT is not installed here")),
        (True, False, ("onnxruntime", "no NVIDIA GPU was found")),
        (True, True, ("tensorrt", "TensorRT and an NVIDIA GPU are present")),
    ],
)
def test_auto_picks_tensorrt_only_with_a_gpu_and_says_why(monkeypatch, tensorrt, gpu, expected):
    real = build_module.importlib.util.find_spec
    spec = lambda name, *a: (object() if tensorrt else None) if name == "tensorrt" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(build_module.importlib.util, "find_spec", spec)
    monkeypatch.setattr(build_module, "has_nvidia_gpu", lambda: gpu)
    backend, why = build_module.choose_backend("auto")
    assert backend == expected[0] and expected[1] in why


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "msvit_edge", "build", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_build_prints_the_validation_and_the_engine(bundle, tmp_path):
    result = run_cli("--bundle", str(bundle.path), "--out", str(tmp_path / "e"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation: onnxruntime fp32 vs PyTorch on 48 reference images" in result.stdout
    assert f"engine: {tmp_path / 'e'}" in result.stdout


def test_open_pipeline_refuses_an_engine_built_for_another_device(bundle, tmp_path):
    engine = build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(tmp_path / "e")))
    manifest = json.loads((engine.path / "manifest.json").read_text())
    manifest["device"]["slug"] = "cuda-sm90-h200"
    (engine.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MsvitEdgeError, match=r"built for device cuda-sm90-h200, this is cpu-.*; rebuild it here"):
        open_pipeline(engine.path)


def test_int8_calibration_renders_the_default_scenes_at_the_model_size(bundle):
    from msvit_edge.calibration.images import load_images

    size = bundle.record.preprocessing.size
    images, _ = load_images(bundle, "fashion-mnist-scenes", n=4)  # a 224 px DeiT-S bundle calibrates the same way
    assert images.shape == (4, size, size, 3) and images.dtype == np.uint8


@pytest.fixture(scope="module")
def latency_only(tmp_path_factory):
    """A latency-only bundle, as `msvit-edge export --preset P --random-weights --fine-fraction 0.5` makes one: the
    demo-sized preset (80 px, depth 6), the smallest with random weights, and its INT8 engine built with defaults."""
    from msvit_edge.export import ExportConfig, export

    root = tmp_path_factory.mktemp("latency-only")
    cfg = ExportConfig(str(root / "bundle"), preset="vit_demo_patch8_80", random_weights=True, fine_fraction=0.5)
    bundle = export(dataclasses.replace(cfg, buckets=3))
    return bundle, build(BuildConfig(str(bundle.path), "int8", "onnxruntime"))


def test_a_latency_only_bundle_calibrates_few_images_spread_over_every_bucket(latency_only):
    bundle, engine = latency_only
    calibration = engine.record.calibration["calibration"]
    assert bundle.record.latency_only and len(bundle.reference().images) == 32
    assert calibration["images"] == 32 and engine.record.calibration["token_counts"] == "spread"
    assert len(calibration["coverage"]) == 3 and all(c["images"] > 0 for c in calibration["coverage"])
    assert calibration["missed_buckets"] == []
