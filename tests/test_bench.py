"""bench for real on the tiny bundle and its ONNX Runtime engines: accuracy against PyTorch, latency against the
plain ViT, the curve and the threshold sweep, the reports, failures that never stop the run, and the CI gates.
Short timing runs (a few calls): the tests check what was measured and written, never how fast it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from msvit_edge.build import BuildConfig, build
from msvit_edge.bundle import GRAPHS
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import sha256
from msvit_edge.measure.accuracy import verdict as bench_verdict
from msvit_edge.measure.bench import BenchConfig, bench

QUICK = {"warmup": 0.0, "iters": 3, "batch": (1, 4)}


@pytest.fixture(scope="module")
def bundle(bundle, copy_bundle):
    """This module's own copy: it writes engines and precision graphs into it."""
    return copy_bundle(bundle)


@pytest.fixture(scope="module")
def int8(bundle, workdir, tmp_path_factory):
    cfg = BuildConfig(str(bundle.path), "int8", "onnxruntime", str(workdir / "fmnist.npz"), 200)
    return build(cfg)


@pytest.fixture(scope="module")
def report(bundle, int8, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    cfg = BenchConfig(sources=(str(bundle.path), str(int8.path)), thresholds=(0.0, 0.5, 1.0), out=str(out), **QUICK)
    return bench(cfg), out


def test_every_source_is_measured_and_passes(report):
    data, _ = report
    assert [e.row["status"] for e in data.engines] == ["passed", "passed"]
    assert [e.row["precision"] for e in data.engines] == ["fp32", "int8"]
    for engine in data.engines:
        assert set(engine.latency) == {"1", "4"}
        lat = engine.latency["4"]
        assert lat["iters"] == 3 and set(lat["stages_ms"]) == {"tokenizer", "selection", "encoder"}
        assert lat["speedup"] == pytest.approx(lat["vit"]["p50_ms"] / lat["p50_ms"])
        assert lat["efficiency"] == pytest.approx(lat["speedup"] / lat["ideal_speedup"])
        low, high = lat["speedup_interval"]
        assert low <= high and lat["efficiency_interval"] == pytest.approx(
            [low / lat["ideal_speedup"], high / lat["ideal_speedup"]]
        )
        assert engine.row["n"] == engine.accuracy["n"] == 48


def test_size_is_what_the_engine_runs_and_int8_stores_its_weights_in_8_bits(report, bundle, int8):
    """One size everywhere (``sources.engine_bytes``): the tokenizer and encoder files the engine runs, not the plain
    ViT; the INT8 graphs hold 8-bit weights only, so the INT8 engine is the smaller (it was the larger)."""
    data, _ = report
    fp32, quantized = (e.info["size_mb"] for e in data.engines)
    assert fp32 == pytest.approx(sum(bundle.graph(n).stat().st_size for n in GRAPHS) / 1e6)
    assert quantized == pytest.approx(sum({int8.graph(n): int8.graph(n).stat().st_size for n in GRAPHS}.values()) / 1e6)
    assert quantized < fp32 and data.engines[1].row["size_mb"] == quantized


def test_fp32_accuracy_matches_the_bundle_reference_exactly(report, bundle):
    data, _ = report
    acc = data.engines[0].accuracy
    ref = bundle.reference()
    assert acc["reference_top1"] == float((ref.logits.argmax(1) == ref.labels).mean())
    assert acc["agreement"] == 1.0 and acc["counts_agreement"] == 1.0 and acc["logits"]["max_abs"] <= 1e-4
    assert sum(b["images"] for b in acc["per_bucket"]) == len(ref.labels)


def test_token_curve_covers_every_bucket_maximum(report, bundle):
    data, _ = report
    curve = data.engines[0].curve
    assert [p["tokens"] for p in curve] == [b.max for b in bundle.plan.buckets]
    assert curve[-1]["tokens"] == 65 and curve[-1]["ideal_ms"] == pytest.approx(curve[-1]["encoder_ms"])


def test_threshold_sweep_trades_tokens_for_the_extremes(report):
    data, _ = report
    sweep = {p["threshold"]: p for p in data.engines[0].thresholds}
    assert sweep[0.0]["mean_tokens"] == 65 and sweep[1.0]["mean_tokens"] == 17
    assert sweep[1.0]["mean_tokens"] < sweep[0.5]["mean_tokens"] < sweep[0.0]["mean_tokens"]


def test_reports_are_written_with_a_versioned_schema(report):
    _, out = report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema_version"] == 3 and on_disk["environment"]["python"]["version"]
    assert sorted(p.name for p in out.iterdir()) == [
        "latency_vs_tokens.png",
        "report.csv",
        "report.json",
        "report.md",
        "thresholds.png",
        "tokens_histogram.png",
    ]
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("source,status,backend,precision")
    assert "| bundle | passed | onnxruntime | fp32 |" in (out / "report.md").read_text()


def test_pytorch_reference_on_data_equals_eval_on_the_same_images(bundle, workdir, tmp_path):
    from msvit_edge.measure.evaluate import EvalConfig, evaluate

    data = str(workdir / "fmnist.npz")
    ckpt = str(workdir / "tiny.safetensors")
    cfg = BenchConfig(sources=(str(bundle.path),), data=data, limit=100, ckpt=ckpt, out=str(tmp_path / "b"), **QUICK)
    acc = bench(cfg).engines[0].accuracy
    ev = evaluate(EvalConfig(ckpt=str(workdir / "tiny.safetensors"), data=data, limit=100, out=str(tmp_path / "e")))
    assert acc["n"] == ev["images"] == 100
    assert round(100 * acc["reference_top1"]) == round(100 * ev["settings"]["msvit"]["top1"])  # images right, of 100


def edited_engine(bundle, folder, **changes):
    """An fp32 engine directory of the tiny bundle with its manifest changed."""
    engine = build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(folder)))
    manifest = json.loads((engine.path / "manifest.json").read_text())
    (engine.path / "manifest.json").write_text(json.dumps(manifest | changes))
    return engine.path


def test_a_broken_engine_fails_alone_and_the_run_exits_1(bundle, tmp_path):
    built = build(BuildConfig(str(bundle.path), "fp32", "onnxruntime", out=str(tmp_path / "x")))
    (tmp_path / "garbage.onnx").write_bytes(b"not a graph")  # recorded as what was built: a consistent, broken folder
    graphs, files = built.manifest["graphs"] | {"encoder": "encoder.onnx"}, built.manifest["files"]
    broken = edited_engine(
        bundle, tmp_path / "broken", graphs=graphs, files=files | {"encoder.onnx": sha256(tmp_path / "garbage.onnx")}
    )
    shutil.copyfile(tmp_path / "garbage.onnx", broken / "encoder.onnx")
    other = edited_engine(bundle, tmp_path / "other", device={"slug": "jetson-agx-thor"})
    out = tmp_path / "report"
    cfg = BenchConfig(sources=(str(broken), str(bundle.path), str(other)), out=str(out), **QUICK)
    with pytest.raises(MsvitEdgeError, match=r"broken failed \(.*encoder.onnx.*\); .*other failed"):
        bench(cfg)
    rows = [e["row"] for e in json.loads((out / "report.json").read_text())["engines"]]
    assert [r["status"] for r in rows] == ["failed", "passed", "failed"]
    assert "encoder.onnx" in rows[0]["error"] and "built for device jetson-agx-thor" in rows[2]["error"]


def test_inputs_are_checked_before_the_output_and_a_failed_bench_leaves_nothing(bundle, tmp_path):
    out = tmp_path / "r"
    for _ in range(2):  # the same command again: no "exists" from the first, failed run
        result = run_cli(str(bundle.path), "--data", str(tmp_path / "nowhere"), "--out", str(out), "--iters", "1")
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert str(tmp_path / "nowhere") in result.stderr and "Traceback" not in result.stderr
        assert not out.exists() and "bench:" not in result.stdout
    result = run_cli(str(tmp_path / "no-such-engine"), "--out", str(tmp_path / "mine"), "--iters", "1")
    assert result.returncode == 1 and "no-such-engine" in result.stderr and not (tmp_path / "mine").exists()


def test_bench_holds_fp32_to_the_same_absolute_tolerance_as_build():
    """One verdict (``validation.verdict``): an fp32 source 1e-3 off PyTorch fails in bench as in build."""
    acc = {"top1": 0.9, "reference_top1": 0.9, "n": 48, "counts_differ": 0}
    acc["logits"] = {"max_abs": 1e-3, "max_rel": 1e-3, "min_cosine": 1.0, "top1_agreement": 1.0}
    info = {"precision": "fp32", "latency_only": False}
    assert "logits max abs diff 1.000e-03 > 0.0001" in bench_verdict(acc, info, BenchConfig())
    assert bench_verdict(acc, info | {"precision": "int8"}, BenchConfig()) is None
    assert "cosine similarity" in bench_verdict(
        acc | {"logits": acc["logits"] | {"min_cosine": 0.5}},
        info | {"precision": "int8", "latency_only": True},
        BenchConfig(),
    )
    nan = acc | {"logits": acc["logits"] | {"max_abs": float("nan")}}
    assert bench_verdict(nan, info, BenchConfig()) is not None  # NaN never passes


def test_min_accuracy_gate_names_the_engine_and_the_shortfall(bundle, tmp_path):
    cfg = BenchConfig(sources=(str(bundle.path),), out=str(tmp_path / "r"), min_accuracy=0.99, **QUICK)
    with pytest.raises(MsvitEdgeError, match=r"bundle top-1 \d+\.\d+% < 99\.00%"):
        bench(cfg)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "msvit_edge", "bench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_prints_the_status_table(bundle, tmp_path):
    result = run_cli(str(bundle.path), "--iters", "2", "--warmup", "0", "--batch", "1", "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| engine | status | backend | precision |" in result.stdout
    assert f"reports: {tmp_path / 'r'}" in result.stdout


NO_TORCH_BENCH = """
import sys
sys.modules["torch"] = None  # any import of torch now fails, as on a Jetson without PyTorch
from msvit_edge.measure.bench import BenchConfig, bench
report = bench(BenchConfig(sources=(sys.argv[1],), data=sys.argv[2], limit=6, out=sys.argv[3], warmup=0.0,
                           iters=2, batch=(1,)))
acc = report.engines[0].accuracy
print(report.engines[0].status, acc["n"], acc["reference"], acc["images"])
"""


def test_data_without_pytorch_reads_an_image_folder_and_says_there_is_no_reference(bundle, tmp_path):
    from PIL import Image

    for cls, shade in (("a", 40), ("b", 200)):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (50 + 10 * i, 40), (shade, i * 30, 0)).save(tmp_path / "photos" / cls / f"{i}.png")
    argv = [str(bundle.path), str(tmp_path / "photos"), str(tmp_path / "report")]
    result = subprocess.run([sys.executable, "-c", NO_TORCH_BENCH, *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    status, n, reference, *origin = result.stdout.split()
    assert (status, n, reference) == ("passed", "6", "None") and "PyTorch is not installed" in " ".join(origin)


V1 = Path(__file__).parent / "data" / "reports" / "bench-v1"  # written by bench before the typed record (schema 1)


def test_a_schema_1_report_still_opens_and_renders_in_todays_layout(tmp_path):
    """Every stored key and number reads back as written; the derived rows gain schema 3's ``n`` and the settings
    today's ``ignore_index``; the Markdown, CSV and plots render from it (in today's layout: the rendering was never
    part of the schema)."""
    from msvit_edge.measure import report as reports
    from msvit_edge.measure.record import BenchReport

    old = BenchReport.read(V1)
    assert old.schema_version == 1 and [e.status for e in old.engines] == ["passed", "failed"]
    assert old.settings.sources == ("bundle", "other-device") and old.settings.batch == (1, 4)
    on_disk, again = json.loads((V1 / "report.json").read_text()), json.loads(json.dumps(old.to_dict()))
    for engine, stored in zip(again["engines"], on_disk["engines"], strict=True):
        assert engine.pop("row") == stored.pop("row") | {"n": stored["accuracy"].get("n")}
    assert again["settings"].pop("ignore_index") is None  # added since (segmentation --data): the bundle's, by default
    assert again == on_disk
    md = reports.markdown(old)
    assert (
        "| bundle | passed | onnxruntime | fp32 | 0.34 | 48 | 41.67% | 100.00% | 0.548 | 1551.6 | 0.54x | 0.421 |" in md
    )
    assert "| 1 | 0.548 | 3.836 | 4.576 | 524.1 |" in md and "timings vary" in md  # its CVs were over 5%
    assert reports.csv_text(old).splitlines()[0].startswith("source,status,backend,precision,size_mb,n,top1")
    reports.write(old, tmp_path / "r", force=False)
    assert (tmp_path / "r" / "latency_vs_tokens.png").is_file()


def test_the_report_reads_back_what_it_wrote(report):
    from msvit_edge.measure.record import SCHEMA_VERSION, BenchReport

    data, out = report
    again = BenchReport.read(out / "report.json")
    assert again.schema_version == SCHEMA_VERSION == 3
    assert json.loads(json.dumps(again.to_dict())) == json.loads((out / "report.json").read_text())
    assert again.settings == data.settings and [e.row for e in again.engines] == [e.row for e in data.engines]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda r: "not json", r"not a JSON file"),
        (lambda r: r | {"schema_version": 99}, r"schema_version is 99, this msvit-edge reads \(1, 2, 3\)"),
        (lambda r: r | {"engines": [{k: v for k, v in r["engines"][0].items() if k != "latency"}]}, r"no 'latency'"),
        (lambda r: r | {"engines": [r["engines"][0] | {"status": "great"}]}, r"engines\[0\]\.status is 'great'"),
        (lambda r: r | {"settings": r["settings"] | {"batch": [0]}}, r"--batch sizes must be >= 1"),
    ],
)
def test_a_damaged_report_is_refused_naming_the_file_and_the_problem(tmp_path, edit, problem):
    from msvit_edge.measure.record import BenchReport

    damaged = edit(json.loads((V1 / "report.json").read_text()))
    path = tmp_path / "report.json"
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    with pytest.raises(MsvitEdgeError, match=rf"^{path}: .*{problem}"):
        BenchReport.read(path)
    with pytest.raises(MsvitEdgeError, match=rf"^{tmp_path / 'nowhere' / 'report.json'}: cannot read"):
        BenchReport.read(tmp_path / "nowhere" / "report.json")
