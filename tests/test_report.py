"""What bench's reports say, from made-up results (no timing): the status table and its notes, the console lines,
which series each plot draws and how they are told apart, the overlays' captions, and the one size of an engine."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.measure import plots
from msvit_edge.measure.accuracy import accuracy_line
from msvit_edge.measure.config import BenchConfig
from msvit_edge.measure.latency import ideal_speedup, interval, latency_line
from msvit_edge.measure.overlay import caption
from msvit_edge.measure.record import BenchReport, SourceResult
from msvit_edge.measure.report import check_gates, csv_text, markdown, table
from msvit_edge.model.config import GateConfig, MSViTConfig, preset
from msvit_edge.model.flops import msvit_macs, vit_macs


def latency(efficiency: float, cv: float = 0.01, interval: tuple[float, float] | None = None) -> dict:
    ideal = 2.0
    low, high = interval or (efficiency - 0.01, efficiency + 0.01)
    return {
        "iters": 10, "p50_ms": 5.0, "p90_ms": 5.0, "p99_ms": 5.0, "mean_ms": 5.0, "std_ms": 0.0, "cv": cv,
        "images_per_s": 200.0, "stages_ms": {"tokenizer": 1.0, "selection": 0.1, "encoder": 3.9}, "mean_tokens": 50.0,
        "ideal_speedup": ideal, "vit": {"p50_ms": 5.0 * ideal * efficiency, "cv": 0.01},
        "speedup": ideal * efficiency, "efficiency": efficiency,
        "speedup_interval": [ideal * low, ideal * high], "efficiency_interval": [low, high],
    }  # fmt: skip


def result(precision: str, vit_ms: float = 8.0, counts: tuple[int, ...] = (47, 53, 53, 101), **kw) -> SourceResult:
    curve = [
        {"tokens": n, "encoder_ms": n * vit_ms / 800, "ideal_ms": n * vit_ms / 900, "vit_ms": vit_ms}
        for n in (47, 53, 101)
    ]
    info = {"backend": "onnxruntime", "precision": precision, "latency_only": False, "size_mb": 9.990883}
    return SourceResult(
        f"runs/demo/bundle/engines/onnxruntime-{precision}",
        "passed",
        info=info | kw.pop("info", {}),
        accuracy={"images": "128 bundle validation images", "n": 128, "top1": 0.8, "agreement": 1.0},
        latency=kw.pop("latency", {"1": latency(0.6), "32": latency(0.9)}),
        curve=curve,
        counts=list(counts),
        **kw,
    )


ENVIRONMENT = json.loads((Path(__file__).parent / "data" / "reports" / "bench-v1" / "report.json").read_text())[
    "environment"
]


def report(*results: SourceResult) -> BenchReport:
    return BenchReport(BenchConfig(sources=tuple(r.source for r in results)), "cpu", list(results), ENVIRONMENT)


def test_the_table_states_n_and_that_speedups_are_against_the_vit_of_the_same_precision():
    text = table(report(result("fp32"), result("int8")))
    head = text.splitlines()[0]
    assert "| size MB | images |" in head and "| speedup vs ViT (same precision) |" in head
    assert "| onnxruntime-int8 | passed | onnxruntime | int8 | 9.99 | 128 | 80.00% |" in text
    assert "timings vary" not in text and "efficiency above 1" not in text


def test_noisy_timings_are_flagged_in_the_table_and_its_markdown():
    noisy = result("fp32", latency={"1": latency(0.6, cv=0.35), "32": latency(0.9, cv=0.02)})
    for text in (table(report(noisy)), markdown(report(noisy))):
        assert "- timings vary (CV over 5%: onnxruntime-fp32 35% at batch 1): the machine was busy" in text
    assert "WARNING: timings vary (CV 35%, over 5%)" in latency_line(1, latency(0.6, cv=0.35))
    assert "| 35% |" in markdown(report(noisy))  # the CV column of its latency table


def test_efficiency_above_1_says_what_it_means_and_whether_it_is_within_the_noise():
    real = latency(1.15, interval=(1.05, 1.25))
    noise = latency(1.08, interval=(0.95, 1.2))
    text = table(report(result("int8", latency={"1": latency(0.6), "32": real, "64": noise})))
    note = next(line for line in text.splitlines() if "efficiency above 1" in line)
    assert "onnxruntime-int8 1.15 at batch 32 (95% 1.05-1.25);" in note
    assert "onnxruntime-int8 1.08 at batch 64 (95% 0.95-1.20, within the noise)" in note
    assert "more MACs per second than the plain ViT" in note and "memory traffic" in note


def test_the_console_line_gives_the_intervals_and_names_the_baseline():
    line = latency_line(32, latency(1.15, interval=(1.05, 1.25)))
    assert "plain ViT (same precision)" in line and "speedup 2.30x (2.10-2.50) of ideal 2.00x" in line
    assert "efficiency 1.15 (1.05-1.25)" in line


def test_random_weights_print_no_accuracy_and_name_the_cosine_criterion():
    acc = {"n": 128, "top1": 0.0, "reference_top1": 0.0, "agreement": 0.7422, "logits": {"min_cosine": 0.9987}}
    line = accuracy_line(acc, {"latency_only": True, "precision": "int8"})
    assert "top-1" not in line.split(";")[0] and "none (random weights" in line
    assert "cosine similarity with PyTorch's >= 0.9987" in line and "cosine similarity >= 0.95" in line
    trained = accuracy_line(acc | {"top1": 0.8, "reference_top1": 0.81}, {"latency_only": False, "precision": "int8"})
    assert "top-1 80.00% on 128 images (PyTorch 81.00%); top-1 agreement with PyTorch 74.22%" in trained
    assert "held to: identical token counts, top-1 agreement >= 95%" in trained


def test_every_series_of_a_plot_differs_in_colour_or_style_from_every_other():
    figure = plots.curve_figure([result("fp32", vit_ms=8.0), result("int8", vit_ms=7.5)])
    looks = [(s.color, s.line, s.marker) for s in figure.series]
    assert len(figure.series) == 6 and len(set(looks)) == 6 and not figure.notes
    vits = [s for s in figure.series if "plain ViT" in s.label]
    assert [s.label.split(":")[0] for s in vits] == ["onnxruntime fp32", "onnxruntime int8"]
    assert vits[0].color != vits[1].color and vits[0].line == vits[1].line == "--"  # told apart by colour ...
    encoders = [s for s in figure.series if s.label.endswith("encoder")]
    assert encoders[0].marker != encoders[1].marker  # ... and by marker, without colour too
    for a, b in itertools.combinations(figure.series, 2):
        assert (a.color, a.line) != (b.color, b.line)


def test_identical_series_are_drawn_once_with_a_note_and_different_ones_apart():
    same = plots.histogram_figure([result("fp32"), result("int8")])
    assert len(same.series) == 1 and same.series[0].label == "onnxruntime fp32 = onnxruntime int8"
    assert same.notes == ["identical, drawn once: onnxruntime fp32 and onnxruntime int8"]
    apart = plots.histogram_figure([result("fp32"), result("int8", counts=(26, 47, 101))])
    assert len(apart.series) == 2 and not apart.notes
    assert apart.series[0].color != apart.series[1].color and apart.series[0].line != apart.series[1].line


def test_two_engines_that_read_alike_get_their_folder_names():
    a, b = result("fp32"), result("fp32")
    b.source = "other/onnxruntime-fp32-second"
    assert plots.engine_labels([a, b]) == [
        "onnxruntime fp32 (onnxruntime-fp32)",
        "onnxruntime fp32 (onnxruntime-fp32-second)",
    ]


def test_plots_are_written(tmp_path):
    plots.plots([result("fp32"), result("int8", thresholds=[])], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency_vs_tokens.png", "tokens_histogram.png"]


def test_overlay_captions_name_the_class_and_the_token_count():
    assert caption(1, 1, 47, ("T-shirt/top", "Trouser")) == "Trouser: 47 tokens"
    assert caption(1, 0, 101, ("T-shirt/top", "Trouser")) == "Trouser: 101 tokens, predicted T-shirt/top"
    assert caption(3, 3, 26) == "class 3: 26 tokens"


def test_the_ideal_is_the_mean_of_each_images_macs():
    model = MSViTConfig(vit=preset("vit_demo_patch8_80"), gate=GateConfig())
    counts = [26, 101]
    per_image = (msvit_macs(model.vit, model.gate, 26) + msvit_macs(model.vit, model.gate, 101)) / 2
    assert ideal_speedup(model, counts) == pytest.approx(vit_macs(model.vit) / per_image)
    # attention's N^2 term: the MACs at the mean count (63.5) are fewer than the mean of the two images' MACs
    assert ideal_speedup(model, counts) < vit_macs(model.vit) / msvit_macs(model.vit, model.gate, 63.5)


def test_the_interval_covers_the_speedup_and_widens_with_noise():
    steady = interval([2.0] * 30, [1.0] * 30)
    assert steady == pytest.approx([2.0, 2.0])
    rng = np.random.default_rng(1)
    vit, msvit = 2.0 + 0.3 * rng.standard_normal(40), 1.0 + 0.15 * rng.standard_normal(40)
    low, high = interval(list(vit), list(msvit))
    assert low < np.median(vit) / np.median(msvit) < high and high - low > 0.1


def segmentation(precision: str = "fp32", **accuracy) -> SourceResult:
    """A made-up segmentation source's result: its scores where a classifier's top-1 is."""
    scores = {"miou": 0.412, "pixel_accuracy": 0.873, "boundary_recall": 0.64, "iou": [0.9, None, 0.3]}
    reference = {f"reference_{k}": v for k, v in scores.items()}
    acc = {"metric": "miou", "images": "24 bundle validation images", "n": 24, **scores, **reference}
    acc |= {"boundary_fine": 16, "boundary_regions": 25, "agreement": 0.9995} | accuracy
    out = result(precision)
    out.source, out.accuracy = f"seg/engines/onnxruntime-{precision}", acc
    return out


def test_a_segmentation_row_shows_miou_pixel_accuracy_and_boundary_recall_where_a_classifier_shows_top1():
    text = table(report(result("fp32"), segmentation()))
    head, _, classifier, dense = text.splitlines()[:4]
    assert "| images | top-1 | mIoU | pixel acc. | boundary recall | agreement |" in head
    assert "| 128 | 80.00% | - | - | - | 100.00% |" in classifier
    assert "| 24 | - | 41.20% | 87.30% | 64.00% | 99.95% |" in dense
    only = table(report(segmentation())).splitlines()[0]
    assert "top-1" not in only and "| mIoU | pixel acc. | boundary recall |" in only
    lines = csv_text(report(result("fp32"), segmentation())).splitlines()
    assert lines[0].endswith(",error,miou,pixel_accuracy,boundary_recall") and len(lines) == 3
    assert csv_text(report(result("fp32"))).splitlines()[0].endswith(",efficiency,error")  # a classifier's as before


def test_a_segmentation_section_lists_per_class_iou_and_gates_read_miou():
    md = markdown(report(segmentation()), {0: "overlays/onnxruntime-fp32"})
    assert "accuracy: mIoU 41.20% (PyTorch 41.20%), pixel accuracy 87.30% (PyTorch 87.30%)" in md
    assert "16 of 25 boundary regions fine; per-pixel agreement with PyTorch 99.95%" in md
    assert "| 1 | - | - |" in md and "| 2 | 30.00% | 30.00% |" in md  # a class without IoU: neither labelled nor found
    assert "\n\noverlays: overlays/onnxruntime-fp32/ (the gate's decisions" in md
    with pytest.raises(MsvitEdgeError, match=r"onnxruntime-fp32 mIoU 41\.20% < 50\.00%; .* per-pixel agreement"):
        check_gates(report(segmentation()), 0.5, 0.9999)


def test_a_segmentation_console_line_names_its_scores_and_the_dense_criterion():
    acc = segmentation().accuracy | {"miou": 0.41, "logits": {"min_cosine": 0.999}}
    line = accuracy_line(acc, {"latency_only": False, "precision": "int8"})
    assert line.startswith("  accuracy: mIoU 41.00% (PyTorch 41.20%), pixel accuracy 87.30% (PyTorch 87.30%)")
    assert "boundary recall 64.00% (PyTorch 64.00%) on 24 images; per-pixel agreement with PyTorch 99.95%" in line
    assert "held to: identical token counts, per-pixel agreement >= 98%, mIoU drop <= 1 points" in line


def test_a_segmentation_sweep_is_plotted_by_its_miou(tmp_path):
    points = [{"threshold": t, "miou": m, "pixel_accuracy": 0.8, "boundary_recall": b, "mean_tokens": n, "p50_ms": ms}
              for t, m, b, n, ms in ((0.0, 0.42, 1.0, 65, 2.0), (1.0, 0.35, 0.0, 17, 1.0))]  # fmt: skip
    seg = segmentation()
    seg.thresholds = points
    (series,) = plots.threshold_figure([seg]).series
    assert series.x == (1.0, 2.0) and series.y == pytest.approx((35.0, 42.0)) and series.points == ("1", "0")
    plots.plots([seg], tmp_path)
    assert (tmp_path / "thresholds.png").is_file()
