"""``bench`` reports: the status table, report.json (``record.BenchReport``, docs/bench-report.md), CSV, Markdown
and plots, and the CI gates read from them. A segmentation source's row shows mIoU, pixel accuracy and boundary recall
where a classifier's shows top-1, its section per-class IoU, and its overlays go into
``overlays/<backend>-<precision>/``.

Written into one folder atomically: a run that fails half way leaves the previous report as it was.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from msvit_edge.bundle.dense import IGNORED
from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, atomic_dir, check_output
from msvit_edge.machine.environment import device_description
from msvit_edge.measure.accuracy import dense_scores
from msvit_edge.measure.overlay import OverlaySample, write_segmentation_overlays
from msvit_edge.measure.plots import engine_labels, plots
from msvit_edge.measure.record import DENSE_SCORES, HIGH_CV, BenchReport, SourceResult, spread

FOLDER = FolderKind(
    "a bench report",
    "report.json",
    lambda r: "engines" in r,
    ("report.json", "report.csv", "report.md", "*.png", "overlays"),
)
COLUMNS = (
    ("status", "status"),
    ("backend", "backend"),
    ("precision", "precision"),
    ("size_mb", "size MB"),
    ("n", "images"),
    ("top1", "top-1"),
    ("agreement", "agreement"),
    ("p50_ms", "p50 ms (b1)"),
    ("images_per_s", "img/s (max b)"),
    ("speedup", "speedup vs ViT (same precision)"),
    ("efficiency", "efficiency"),
)
DENSE_COLUMNS = (("miou", "mIoU"), ("pixel_accuracy", "pixel acc."), ("boundary_recall", "boundary recall"))
PERCENT = ("top1", "agreement", *DENSE_SCORES)


def check_out(out: str | Path, force: bool) -> None:
    """Refuse an unusable report folder before any measuring."""
    check_output(out, FOLDER, force)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in PERCENT:
        return f"{100 * value:.2f}%"
    if key in ("speedup",):
        return f"{value:.2f}x"
    if key == "size_mb":
        return f"{value:.2f}"  # as demo's build lines print it
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def table(report: BenchReport) -> str:
    """The status table as Markdown, with its notes: errors, random weights, noisy timings, efficiency above 1 (the
    console shows the same)."""
    columns = _columns(report.engines)
    head = ["engine", *(title for _, title in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in (engine.row for engine in report.engines):
        cells = [_name(r["source"]), *(_cell(k, r.get(k)) for k, _ in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {e.source}: {e.error}" for e in report.engines if e.error]
    random = [e for e in report.engines if e.info.get("latency_only")]
    if random:
        what = " and ".join(dict.fromkeys("mIoU" if e.dense else "top-1" for e in random))
        notes.append(f"- random weights (latency-only bundle): {what} means nothing and is not shown")
    notes += [note for note in (_noisy(report.engines), _above_ideal(report.engines)) if note]
    return "\n".join(lines + notes)


def _columns(engines: list[SourceResult]) -> list[tuple[str, str]]:
    """The status table's columns: top-1 for classifiers, mIoU, pixel accuracy and boundary recall for segmentation
    sources (both where a run has both)."""
    index = [k for k, _ in COLUMNS].index("top1")
    scores = [("top1", "top-1")] if not all(e.dense for e in engines) or not engines else []
    scores += list(DENSE_COLUMNS) if any(e.dense for e in engines) else []
    return [*COLUMNS[:index], *scores, *COLUMNS[index + 1 :]]


def _name(source: str) -> str:
    return Path(source).name or source


def _noisy(engines: list[SourceResult]) -> str | None:
    """One note naming each engine's batch sizes whose timings varied more than ``HIGH_CV``."""
    noisy = []
    for e in engines:
        cvs = [f"{100 * spread(lat):.0f}% at batch {b}" for b, lat in e.latency.items() if spread(lat) > HIGH_CV]
        noisy += [f"{_name(e.source)} {', '.join(cvs)}"] if cvs else []
    if not noisy:
        return None
    return (
        f"- timings vary (CV over {100 * HIGH_CV:.0f}%: {'; '.join(noisy)}): the machine was busy or throttling; "
        "the efficiencies' 95% intervals (report.md, per engine) say how far to trust the ratios"
    )


def _above_ideal(engines: list[SourceResult]) -> str | None:
    """One note on every batch size whose efficiency is above 1, and what that means (docs/bench-report.md)."""
    words = []
    for e in engines:
        for b, lat in e.latency.items():
            if (lat.get("efficiency") or 0.0) > 1:
                low, high = lat.get("efficiency_interval") or (None, None)
                span = "" if low is None else f" (95% {low:.2f}-{high:.2f}{', within the noise' if low <= 1 else ''})"
                words.append(f"{_name(e.source)} {lat['efficiency']:.2f} at batch {b}{span}")
    if not words:
        return None
    return (
        f"- efficiency above 1 ({'; '.join(words)}): MSViT ran more MACs per second than the plain ViT. The ideal "
        "counts MACs, not memory traffic, and at large batches the plain ViT's activations outgrow the caches, so "
        "fewer tokens save traffic too; an interval that reaches 1 cannot tell it from noise (docs/bench-report.md)"
    )


def result_line(result: SourceResult) -> str:
    r = result.row
    return f"  {r['status']}" + (f": {r['error']}" if r["error"] else "")


def write(report: BenchReport, out: str | Path, force: bool, overlays: dict[int, OverlaySample] | None = None) -> None:
    """report.json, report.csv, report.md, the plots and, per segmentation source (its index in ``report.engines``),
    its overlays (the gate's decisions, predicted and true masks: ``overlays/<backend>-<precision>/000.png``, ...),
    into ``out`` atomically."""
    overlays = overlays or {}
    folders = overlay_folders(report, list(overlays))
    with atomic_dir(out, FOLDER, force) as tmp:
        report.write(tmp / "report.json")
        (tmp / "report.csv").write_text(csv_text(report))
        (tmp / "report.md").write_text(markdown(report, folders))
        plots(report.engines, tmp)
        for i, o in overlays.items():
            write_segmentation_overlays(o.images, o.fine, o.predicted, o.truth, o.region, tmp / folders[i], IGNORED)


def overlay_folders(report: BenchReport, indices: list[int]) -> dict[int, str]:
    """``overlays/<backend>-<precision>`` for each of these engines (as the plots' legends name them), made safe as a
    file name, and unique."""
    labels, folders = engine_labels(report.engines), {}
    for i in indices:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", labels[i]).strip("-.") or "source"
        folder, k = f"overlays/{name}", 1
        while folder in folders.values():
            k += 1
            folder = f"overlays/{name}-{k}"
        folders[i] = folder
    return folders


def csv_text(report: BenchReport) -> str:
    """report.csv: the status-table rows (every key any row has: a segmentation source's scores too)."""
    rows = [engine.row for engine in report.engines]
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["source"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buffer.getvalue()


def markdown(report: BenchReport, overlays: dict[int, str] | None = None) -> str:
    """report.md: when and where, the status table, then each source's latency table and power; a segmentation
    source's scores, per-class IoU and its ``overlays`` folder (by index in ``report.engines``) too."""
    lines = [
        "# msvit-edge bench",
        "",
        f"{report.created} on {report.device}: {device_description(report.environment)}",
        "",
        table(report),
        "",
    ]
    for i, engine in enumerate(report.engines):
        lines += _engine_section(engine, (overlays or {}).get(i))
    return "\n".join(lines) + "\n"


LATENCY_HEAD = (
    "batch",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "img/s",
    "tokenizer ms",
    "selection ms",
    "encoder ms",
    "plain ViT ms (same precision)",
    "speedup",
    "ideal",
    "efficiency",
    "efficiency 95%",
    "CV",
)


def _engine_section(engine: SourceResult, overlays: str | None = None) -> list[str]:
    error = f" ({engine.error})" if engine.error else ""
    lines = [f"## {engine.source}", "", f"status: {engine.status}{error}"]
    if engine.accuracy.get("images"):
        lines.append(f"images: {engine.accuracy['images']}")
    if engine.dense and "n" in engine.accuracy and not engine.info.get("latency_only"):
        lines += _dense_section(engine.accuracy)
    if overlays:
        lines.append(f"overlays: {overlays}/ (the gate's decisions, the predicted mask, the ground truth)")
    if engine.latency:
        lines += ["", "| " + " | ".join(LATENCY_HEAD) + " |", "|" + "---|" * len(LATENCY_HEAD)]
        lines += [_latency_row(batch, lat) for batch, lat in engine.latency.items()]
    if engine.power:
        p = engine.power
        lines += [
            "",
            f"power ({p['source']}, {p['total_rail']}): {p['avg_mw']:.0f} mW average, "
            f"{p['energy_mj']:.2f} mJ per image",
        ]
        lines += [f"- warning: {w}" for w in p["warnings"]]
    return [*lines, ""]


def _dense_section(acc: dict) -> list[str]:
    """A segmentation source's scores beside PyTorch's (where known), then its per-class IoU."""
    theirs = "reference_miou" in acc
    pct = lambda v: _cell("top1", v)  # noqa: E731
    line = f"accuracy: {dense_scores(acc)}; {acc['boundary_fine']} of {acc['boundary_regions']} boundary regions fine"
    lines = [line + (f"; per-pixel agreement with PyTorch {pct(acc['agreement'])}" if "agreement" in acc else "")]
    lines += ["", "| class | IoU" + (" | PyTorch IoU |" if theirs else " |"), "|---|---|" + ("---|" if theirs else "")]
    for k, iou in enumerate(acc["iou"]):
        lines.append(f"| {k} | {pct(iou)}" + (f" | {pct(acc['reference_iou'][k])} |" if theirs else " |"))
    return [*lines, ""]


def _latency_row(batch: str, lat: dict) -> str:
    st, vit = lat["stages_ms"], lat.get("vit", {})
    cells = [batch, lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["images_per_s"], st.get("tokenizer")]
    cells += [st.get("selection"), st.get("encoder"), vit.get("p50_ms"), lat.get("speedup"), lat["ideal_speedup"]]
    cells = [_cell("", c) for c in [*cells, lat.get("efficiency")]]
    bounds = lat.get("efficiency_interval")
    cells += ["-" if bounds is None else f"{bounds[0]:.2f}-{bounds[1]:.2f}", f"{100 * spread(lat):.0f}%"]
    return "| " + " | ".join(cells) + " |"


def check_gates(report: BenchReport, min_accuracy: float | None, min_agreement: float | None) -> None:
    """Raise (the CLI exits 1) naming each engine that failed or missed a gate, and by how much."""
    problems = []
    for engine in report.engines:
        r, mine = engine.row, []
        if r["status"] == "failed":
            mine.append(f"{r['source']} failed ({r['error']})")
        key, metric = ("miou", "mIoU") if engine.dense else ("top1", "top-1")
        if min_accuracy is not None and r.get(key) is not None and r[key] < min_accuracy:
            mine.append(f"{r['source']} {metric} {100 * r[key]:.2f}% < {100 * min_accuracy:.2f}%")
        if min_agreement is not None and (r["agreement"] or 0.0) < min_agreement:
            got = "n/a" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%"
            agreement = "per-pixel agreement" if engine.dense else "agreement"
            mine.append(f"{r['source']} {agreement} {got} < {100 * min_agreement:.2f}%")
        if r["status"] == "validation failed" and not mine:
            mine.append(f"{r['source']} missed its precision's tolerance")
        problems += mine
    if problems:
        raise MsvitEdgeError("bench: " + "; ".join(problems))
