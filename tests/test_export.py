"""Export for real: dynamo ONNX export, simplification, bucket plan, ONNX Runtime validation, Polygraphy comparison."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from polygraphy.backend.base import BaseRunner
from torch import nn

from msvit_edge import export as export_module
from msvit_edge.bundle import validation
from msvit_edge.bundle.buckets import plan_buckets
from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.engines.pytorch import TorchPipeline
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.export import EncoderGraph, ExportConfig, TokenizerGraph, export, sha256, simplify
from msvit_edge.model.checkpoint import save_checkpoint


def test_bundle_holds_single_file_graphs_manifest_and_reference(bundle, workdir):
    names = sorted(p.name for p in bundle.path.iterdir())
    assert names == [
        "encoder.onnx",
        "encoder_masked.onnx",
        "manifest.json",
        "reference.npz",
        "tokenizer.onnx",
        "vit.onnx",
    ]
    m = bundle.manifest
    assert m["source"]["sha256"] == sha256(workdir / "tiny.safetensors") and m["opset"] == 20
    assert m["tokens"] == {"min": 17, "max": 65, "candidates": 81}
    assert m["preprocessing"]["mean"] == [0.5] * 3
    assert m["versions"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    enc = {i["name"]: i for i in m["graphs"]["encoder_masked"]["inputs"]}
    assert isinstance(enc["tokens"]["shape"][0], str) and isinstance(enc["tokens"]["shape"][1], str)  # B, N symbolic
    assert enc["tokens"]["shape"][2] == 32 and enc["mask"]["dtype"] == "bool"
    tok = {o["name"]: o["shape"] for o in m["graphs"]["tokenizer"]["outputs"]}
    assert tok["tokens"][1:] == [81, 32] and tok["probs"][1:] == [16]


def test_the_manifest_records_names_and_digests_not_the_exporting_machines_paths(bundle, workdir):
    text = (bundle.path / "manifest.json").read_text()
    assert str(workdir) not in text and str(bundle.path) not in text and '"/' not in text
    m = bundle.manifest
    assert m["source"]["checkpoint"] == "tiny.safetensors" and m["export"]["calib"] == "fmnist.npz"
    assert len(m["export"]["calib_sha256"]) == 64 and "out" not in m["export"]


def test_plain_vit_graph_is_the_all_fine_msvit_with_the_same_weights(bundle, workdir):
    from msvit_edge.engines.ort import session

    x = bundle.preprocess(bundle.reference().images[:6])
    vit = session(bundle.graph("vit")).run(["logits"], {"images": x})[0]
    with OnnxRuntimePipeline(bundle) as pipe:
        all_fine = pipe(x, 0.0)
    assert all_fine.counts.tolist() == [65] * 6
    np.testing.assert_allclose(vit, all_fine.logits, rtol=0, atol=1e-5)


def test_bucket_plan_covers_every_count_and_matches_the_histogram(bundle):
    plan = bundle.plan
    assert plan.buckets[0].min == 17 and plan.buckets[-1].max == 65 and len(plan.buckets) == 3
    assert sum(plan.histogram.values()) == 300 and 0 <= plan.expected_overhead < 1
    ref = bundle.reference()
    assert ref.counts.min() >= 17 and ref.counts.max() <= 65 and plan.mean_count > 17


def test_the_recorded_validation_is_what_onnx_runtime_gives_on_the_bundle(bundle):
    # Recomputed here without msvit_edge.bundle.validation: a record of other images, another threshold or a stale run
    # would differ. (Export refuses to write a bundle that fails validation; see the tests below.)
    ref, v = bundle.reference(), bundle.manifest["validation"]
    x = bundle.preprocess(ref.images)
    with OnnxRuntimePipeline(bundle) as pipe:
        for mode, size in (("batch1", 1), ("batched", 32)):
            outs = [pipe(x[i : i + size], bundle.threshold) for i in range(0, len(x), size)]
            logits, counts = (np.concatenate([getattr(o, k) for o in outs]) for k in ("logits", "counts"))
            assert v[mode]["counts_equal"] == np.array_equal(counts, ref.counts)
            assert v[mode]["logits"]["max_abs"] == pytest.approx(np.abs(logits - ref.logits).max(), rel=1e-6)
            assert v[mode]["top1"] == (logits.argmax(1) == ref.labels).mean()
    assert v["images"] == len(ref.images) == 48
    assert v["accuracy"]["reference"] == (ref.logits.argmax(1) == ref.labels).mean()


def test_onnxruntime_pipeline_reproduces_pytorch_in_every_mode(bundle, workdir):
    ref = bundle.reference()
    x = bundle.preprocess(ref.images)
    assert len(set(ref.counts.tolist())) > 3  # the untrained gate spreads counts over several buckets
    with OnnxRuntimePipeline(bundle) as ort_pipe:
        for pad in (False, True):
            ort_pipe.pad_to_bucket = pad
            out = ort_pipe(x[:16], bundle.threshold)
            np.testing.assert_array_equal(out.counts, ref.counts[:16])
            np.testing.assert_allclose(out.logits, ref.logits[:16], rtol=0, atol=1e-4)
            largest = bundle.plan.buckets[bundle.plan.index(int(ref.counts[:16].max()))]
            assert max(c.rows for c in out.calls) == (largest.max if pad else ref.counts[:16].max())
    model, _ = export_module.load_checkpoint(workdir / "tiny.safetensors")
    torch_out = TorchPipeline(model)(x[:16], bundle.threshold)
    np.testing.assert_allclose(torch_out.logits, ref.logits[:16], rtol=0, atol=1e-5)


@pytest.mark.parametrize("threshold, count", [(0.0, 65), (1.0, 17)])
def test_onnx_tokenizer_thresholds_0_and_1_are_all_fine_and_all_coarse(bundle, threshold, count):
    ref = bundle.reference()
    with OnnxRuntimePipeline(bundle) as pipe:
        tokens, counts, *_ = pipe.tokenize(bundle.preprocess(ref.images[:6]), threshold)
    assert counts.tolist() == [count] * 6 and tokens.shape == (6, 81, 32)


@pytest.mark.parametrize(
    "threads, expected", [(None, {"tokenizer": 0, "encoder": 0}), (1, {"tokenizer": 1, "encoder": 1})]
)
def test_onnxruntime_sessions_share_the_thread_setting_and_never_spin(bundle, threads, expected):
    with OnnxRuntimePipeline(bundle, threads=threads) as pipe:
        options = {name: pipe.sessions[name].get_session_options() for name in expected}
    assert {name: o.intra_op_num_threads for name, o in options.items()} == expected  # 0: ONNX Runtime's default
    spinning = {o.get_session_config_entry("session.intra_op.allow_spinning") for o in options.values()}
    assert spinning == {"0"}


# Polygraphy's relative-difference statistic divides by the expected value: 0/0 on `order`'s first column (CLS is
# always candidate 0). The comparison itself uses atol, which passes there.
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
def test_polygraphy_comparator_onnxruntime_against_pytorch(bundle, workdir):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    model, _ = export_module.load_checkpoint(workdir / "tiny.safetensors")
    model.set_export(True)
    ref = bundle.reference()
    x = bundle.preprocess(ref.images[:8])
    threshold = np.asarray(bundle.threshold, dtype=np.float32)
    with torch.no_grad():
        out = model.tokenize(torch.from_numpy(x), threshold=bundle.threshold)
    feeds = {
        "tokenizer": [{"images": x[i : i + 2], "threshold": threshold} for i in range(0, 8, 2)],
        # real tokens cut to real counts: one feed per image, so several buckets' shapes
        "encoder": [{"tokens": out.tokens[i : i + 1, : out.counts[i]].numpy()} for i in range(8)],
    }
    for name, module in (("tokenizer", TokenizerGraph(model)), ("encoder", EncoderGraph(model))):
        io = bundle.manifest["graphs"][name]
        inputs = {i["name"]: (i["dtype"], i["shape"]) for i in io["inputs"]}
        outputs = [o["name"] for o in io["outputs"]]
        runners = [
            OnnxrtRunner(SessionFromOnnx(str(bundle.graph(name)), providers=["cpu"])),
            TorchRunner(module, inputs, outputs),
        ]
        results = Comparator.run(runners, data_loader=feeds[name])
        assert bool(Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e-4, rtol=0)))


class TorchRunner(BaseRunner):
    """Polygraphy runner for a PyTorch module whose positional inputs and outputs are named.

    Args:
        module: The module; called with the inputs in ``inputs`` order.
        inputs: Input name -> (numpy dtype, shape); a dynamic dim is a name or None (as in a bundle's manifest).
        output_names: Names of the module's outputs, in order.
        name: Runner name in Polygraphy's reports.
    """

    def __init__(
        self,
        module: nn.Module,
        inputs: dict[str, tuple[str, Sequence]],
        output_names: Sequence[str],
        name: str = "pytorch",
    ):
        super().__init__(name=name, prefix="pytorch-runner")
        self.module, self.inputs_meta, self.output_names = module.eval(), dict(inputs), list(output_names)

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self):
        from polygraphy.common import TensorMetadata

        metadata = TensorMetadata()
        for name, (dtype, shape) in self.inputs_meta.items():
            metadata.add(name, dtype=np.dtype(dtype), shape=list(shape))
        return metadata

    @torch.no_grad()
    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
        start = time.perf_counter()
        outputs = self.module(*(torch.from_numpy(np.asarray(feed_dict[n])) for n in self.inputs_meta))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        self.inference_time = time.perf_counter() - start  # Polygraphy requires it
        return OrderedDict((n, o.numpy()) for n, o in zip(self.output_names, outputs, strict=True))


@pytest.mark.parametrize("simplifier", ["onnxsim", "onnxslim"])
def test_simplifiers_keep_symbolic_token_dims(bundle, tmp_path, simplifier):
    path = tmp_path / "encoder.onnx"
    path.write_bytes(bundle.graph("encoder_masked").read_bytes())
    assert simplify(path, simplifier) > 0
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(path).graph.input]
    assert all(isinstance(d[0], str) and isinstance(d[1], str) for d in dims)


def small_export(workdir: Path, out: Path, ckpt: Path | None = None) -> ExportConfig:
    """A quick export of the tiny model (2 buckets, 100 calibration and 8 validation images)."""
    ckpt = ckpt or workdir / "tiny.safetensors"
    calib = str(workdir / "fmnist.npz")
    return ExportConfig(str(out), str(ckpt), buckets=2, calib=calib, calib_images=100, val_images=8)


def test_failed_validation_is_an_error_with_numbers_and_leaves_nothing(workdir, monkeypatch):
    monkeypatch.setitem(validation.TOLERANCES, "fp32", validation.Tolerance(0.0, 1.0, 0.0))
    out = workdir / "strict"
    cfg = small_export(workdir, out)
    with pytest.raises(MsvitEdgeError, match=r"ONNX Runtime logits max abs diff \d\.\d+e-\d+ > 0 \(max rel"):
        export(cfg)
    assert not out.exists() and not list(workdir.glob(".strict*"))


def test_nan_logits_fail_validation_and_leave_nothing(workdir, tmp_path):
    model, _ = export_module.load_checkpoint(workdir / "tiny.safetensors")
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")  # every logit of class 0 becomes NaN, in PyTorch and in ONNX Runtime
    save_checkpoint(model, tmp_path / "nan.safetensors")
    cfg = small_export(workdir, tmp_path / "bundle", tmp_path / "nan.safetensors")
    with pytest.raises(MsvitEdgeError, match=r"logits max abs diff nan > 0.0001"):
        export(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_a_model_over_the_protobuf_limit_keeps_its_weights_beside_each_graph(workdir, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module.graphs, "PROTOBUF_LIMIT", 0)  # the tiny model stands in for one over 2 GB
    cfg = small_export(workdir, tmp_path / "bundle")
    bundle = export(cfg)  # validated in ONNX Runtime, which reads the side files
    for name in ("tokenizer", "encoder", "encoder_masked"):
        assert bundle.manifest["graphs"][name]["data"] == f"{name}.onnx.data"
        assert sorted(p.name for p in bundle.path.glob(f"{name}.onnx*")) == [f"{name}.onnx", f"{name}.onnx.data"]
        assert bundle.graph(name).stat().st_size < 20_000  # the graph only: its weights are in the .data file
        onnx.checker.check_model(str(bundle.graph(name)))
    assert bundle.manifest["validation"]["batch1"]["counts_equal"]


def test_console_plan_lists_the_histogram():
    histogram = {20: 3, 21: 1, 30: 5}
    plan = plan_buckets(np.repeat(list(histogram), list(histogram.values())), 2, lambda n: n * n, 17, 65)
    text = export_module.describe_plan(plan)
    assert "histogram (tokens:images) 20:3 21:1 30:5" in text
    assert "expected padding overhead" in text and text.count("  bucket ") == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "msvit_edge", "export", *args], capture_output=True, text=True, timeout=300
    )


def test_existing_output_is_refused_unless_forced(bundle, workdir):
    before = json.loads((bundle.path / "manifest.json").read_text())
    result = run_cli("--out", str(bundle.path), "--ckpt", str(workdir / "tiny.safetensors"))
    assert result.returncode == 1 and "output folder exists and holds an export bundle (pass --force" in result.stderr
    assert json.loads((bundle.path / "manifest.json").read_text()) == before


@pytest.mark.parametrize("where, message", [("file", "output path exists and is not a folder"), ("under", "is a file")])
def test_an_output_path_that_cannot_be_a_folder_is_refused_before_any_work(workdir, tmp_path, where, message):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "sub" / "bundle"
    result = run_cli("--out", str(out), "--force", "--ckpt", str(workdir / "tiny.safetensors"))
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr[-1000:]
    assert message in result.stderr and "buckets:" not in result.stdout  # refused before planning
    assert blocker.read_text() == "keep me" and [p.name for p in tmp_path.iterdir()] == ["blocker"]


# The export under test, with two hooks that make the test independent of timing. It prints "SIGNAL ME" once it is
# inside the temporary folder (or, for the library variants, once a stand-in for a library has control), and it
# holds the commit until the test has sent the signal, so the export cannot finish first however slow the machine.
# The variants are what libraries on the export's path do with the exception a signal handler raises: onnxslim's
# bare `except:` around the process's first `import onnxruntime` swallows it (the export then went on and exited
# 0); torch.export's lazy imports inside `try`/`except SomeError` turn it into an AttributeError (a traceback).
STOPPABLE_EXPORT = """
import sys, time
from contextlib import contextmanager
from pathlib import Path
from msvit_edge import export
library, go = sys.argv[1], Path(sys.argv[2])
sys.argv = ["msvit-edge", "export", *sys.argv[3:]]
real_atomic_dir, real_export_graphs = export.atomic_dir, export.export_graphs

@contextmanager
def atomic_dir(path, kind, force=False):
    with real_atomic_dir(path, kind, force) as tmp:
        if library == "none":
            print("SIGNAL ME", file=sys.stderr, flush=True)
        yield tmp
        while not go.exists():
            time.sleep(0.05)

def export_graphs(*args):
    try:
        print("SIGNAL ME", file=sys.stderr, flush=True)
        time.sleep(600)
    except BaseException:
        if library == "replaces":
            raise RuntimeError("a library's own error, raised while the stop unwound") from None
    return real_export_graphs(*args)

export.atomic_dir = atomic_dir
if library != "none":
    export.export_graphs = export_graphs
from msvit_edge.cli.app import main
main()
"""


@pytest.mark.parametrize("library", ["none", "swallows", "replaces"])
def test_sigterm_leaves_no_temporary_folder(workdir, tmp_path, library):
    out, go = tmp_path / "out" / "bundle", tmp_path / "go"
    argv = ["--out", str(out), "--ckpt", str(workdir / "tiny.safetensors"), "--calib", str(workdir / "fmnist.npz")]
    argv += ["--buckets", "2", "--calib-images", "100", "--val-images", "4"]
    cmd = [sys.executable, "-c", STOPPABLE_EXPORT, library, str(go), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in iter(proc.stderr.readline, ""):  # no deadline needed: the export ends by itself at worst
            if line.startswith("SIGNAL ME"):
                break
        else:
            pytest.fail("the export ended before it was inside its temporary folder")
        proc.send_signal(signal.SIGTERM)
        go.touch()
        stderr = proc.stderr.read()
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().endswith("terminated") and list(out.parent.iterdir()) == []


NO_TORCH = """
import sys
import numpy as np
sys.modules["torch"] = None  # any import of torch now fails, as on a Jetson without PyTorch
from msvit_edge.bundle import Bundle
from msvit_edge.engines.ort import OnnxRuntimePipeline
from msvit_edge.model.flops import encoder_macs
from msvit_edge.model.config import MSViTConfig
bundle = Bundle(sys.argv[1])
ref = bundle.reference()
with OnnxRuntimePipeline(bundle) as pipe:
    out = pipe(bundle.preprocess(ref.images[:8]), bundle.threshold)
assert np.array_equal(out.counts, ref.counts[:8])
vit = MSViTConfig.from_dict(bundle.manifest["model"]).vit
print(float(np.abs(out.logits - ref.logits[:8]).max()), encoder_macs(vit, 65))
"""


def test_bundle_runs_and_is_checked_without_pytorch(bundle, workdir, count_macs):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle.path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    max_abs, macs = map(float, result.stdout.split())
    model, _ = export_module.load_checkpoint(workdir / "tiny.safetensors")
    assert max_abs <= 1e-4 and macs == count_macs(model, model.encode, torch.zeros(1, 65, 32))


@pytest.mark.parametrize("fraction", [0.2, 0.6])
def test_fine_fraction_sets_the_threshold_that_makes_that_share_of_regions_fine(workdir, fraction):
    cfg = ExportConfig(
        ckpt=str(workdir / "tiny.safetensors"), calib=str(workdir / "fmnist.npz"), fine_fraction=fraction
    )
    model, _ = export_module.load_model(cfg)
    threshold = export_module.choose_threshold(model, cfg)
    counts, _ = export_module.token_counts(model, cfg.calib, "train", 400, threshold)
    fine_share = ((counts - model.num_regions - 1) / 3).mean() / model.num_regions
    assert abs(fine_share - fraction) < 0.02


def test_random_weights_preset_is_a_latency_only_model_of_that_size():
    cfg = ExportConfig(preset="vit_tiny_patch16_224", random_weights=True)
    model, source = export_module.load_model(cfg)
    assert source == "random weights (vit_tiny_patch16_224)"
    assert model.vit_config.embed_dim == 192 and model.vit_config.img_size == 224 and model.num_regions == 49


def test_export_skip_corrupt_plans_and_validates_on_the_readable_images(workdir, tmp_path):
    from PIL import Image

    from msvit_edge.bundle import Bundle

    with np.load(workdir / "fmnist.npz") as z:
        images = z["images"][:12]
    for i, image in enumerate(images):
        folder = tmp_path / "calib" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    (tmp_path / "calib" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "calib" / "a" / "notes.txt").write_text("not an image")
    argv = ["--ckpt", str(workdir / "tiny.safetensors"), "--calib", str(tmp_path / "calib"), "--buckets", "1"]
    argv += ["--calib-images", "100", "--val-images", "4"]
    stopped = run_cli("--out", str(tmp_path / "stopped"), *argv)
    assert stopped.returncode == 1 and stopped.stderr.strip().endswith(
        "notes.txt: not an image file (expected one of .bmp, .jpeg, .jpg, .png, .webp)"
    )
    skipped = run_cli("--out", str(tmp_path / "bundle"), *argv, "--skip-corrupt")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert "broken.png" in skipped.stderr and "notes.txt" in skipped.stderr
    made = Bundle(tmp_path / "bundle")
    assert sum(made.plan.histogram.values()) == 12 and made.manifest["export"]["skip_corrupt"]
    assert not (tmp_path / "stopped").exists()


def test_a_latency_only_export_plans_on_fewer_images_and_stores_fewer_answers_unless_told():
    latency = ExportConfig(preset="vit_tiny_patch16_224", random_weights=True)
    trained = ExportConfig()
    told = ExportConfig(preset="vit_tiny_patch16_224", random_weights=True, calib_images=500, val_images=64)
    assert (latency.calib_images, latency.val_images) == (256, 32)
    assert (trained.calib_images, trained.val_images) == (2000, 128)  # a checkpoint's bundle: as before
    assert (told.calib_images, told.val_images) == (500, 64)


def test_batched_reference_answers_are_the_image_by_image_ones_within_float_rounding(workdir):
    model, _ = export_module.load_checkpoint(workdir / "tiny.safetensors")
    args = (model, str(workdir / "fmnist.npz"), 24, model.config.threshold)
    one, batched = export_module.make_reference(*args), export_module.make_reference(*args, batched=True)
    assert len(set(one.counts.tolist())) > 1  # mixed counts: the batched call pads and masks
    np.testing.assert_array_equal(batched.images, one.images)
    np.testing.assert_array_equal(batched.counts, one.counts)
    np.testing.assert_allclose(batched.logits, one.logits, rtol=0, atol=1e-5)
