"""``bench`` reports: the status table, report.json (``record.BenchReport``, docs/bench-report.md), CSV, Markdown
and plots, and the CI gates read from them.

Written into one folder atomically: a run that fails half way leaves the previous report as it was.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, atomic_dir, check_output
from msvit_edge.machine.environment import device_description
from msvit_edge.measure.record import BenchReport, SourceResult

FOLDER = FolderKind(
    "a bench report", "report.json", lambda r: "engines" in r, ("report.json", "report.csv", "report.md", "*.png")
)
COLUMNS = (
    ("status", "status"),
    ("backend", "backend"),
    ("precision", "precision"),
    ("size_mb", "size MB"),
    ("top1", "top-1"),
    ("agreement", "agreement"),
    ("p50_ms", "p50 ms (b1)"),
    ("images_per_s", "img/s (max b)"),
    ("speedup", "speedup vs ViT"),
    ("efficiency", "efficiency"),
)


def check_out(out: str | Path, force: bool) -> None:
    """Refuse an unusable report folder before any measuring."""
    check_output(out, FOLDER, force)


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("top1", "agreement"):
        return f"{100 * value:.2f}%"
    if key in ("speedup",):
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def table(report: BenchReport) -> str:
    """The status table as Markdown (the console shows the same)."""
    head = ["engine", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [engine.row for engine in report.engines]
    for r in rows:
        cells = [Path(r["source"]).name or r["source"], *(_cell(k, r[k]) for k, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['source']}: {r['error']}" for r in rows if r["error"]]
    if any(e.info.get("latency_only") for e in report.engines):
        notes.append("- random weights (latency-only bundle): top-1 means nothing and is not shown")
    return "\n".join(lines + notes)


def result_line(result: SourceResult) -> str:
    r = result.row
    return f"  {r['status']}" + (f": {r['error']}" if r["error"] else "")


def write(report: BenchReport, out: str | Path, force: bool) -> None:
    """report.json, report.csv, report.md and the plots, into ``out`` atomically."""
    with atomic_dir(out, FOLDER, force) as tmp:
        report.write(tmp / "report.json")
        (tmp / "report.csv").write_text(csv_text(report))
        (tmp / "report.md").write_text(markdown(report))
        plots(report.engines, tmp)


def csv_text(report: BenchReport) -> str:
    """report.csv: the status-table rows."""
    rows = [engine.row for engine in report.engines]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["source"])
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buffer.getvalue()


def markdown(report: BenchReport) -> str:
    """report.md: when and where, the status table, then each source's latency table and power."""
    lines = [
        "# msvit-edge bench",
        "",
        f"{report.created} on {report.device}: {device_description(report.environment)}",
        "",
        table(report),
        "",
    ]
    for engine in report.engines:
        lines += _engine_section(engine)
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
    "plain ViT ms",
    "speedup",
    "ideal",
    "efficiency",
)


def _engine_section(engine: SourceResult) -> list[str]:
    error = f" ({engine.error})" if engine.error else ""
    lines = [f"## {engine.source}", "", f"status: {engine.status}{error}"]
    if engine.accuracy.get("images"):
        lines.append(f"images: {engine.accuracy['images']}")
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


def _latency_row(batch: str, lat: dict) -> str:
    st, vit = lat["stages_ms"], lat.get("vit", {})
    cells = [batch, lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["images_per_s"], st.get("tokenizer")]
    cells += [st.get("selection"), st.get("encoder"), vit.get("p50_ms"), lat.get("speedup"), lat["ideal_speedup"]]
    return "| " + " | ".join(_cell("", c) for c in [*cells, lat.get("efficiency")]) + " |"


def plots(results: list[SourceResult], folder: Path) -> None:
    """latency_vs_tokens.png, tokens_histogram.png and, with a threshold sweep, thresholds.png."""
    import matplotlib  # lazy: slow to import, and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if r.curve]
    if measured:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in measured:
            label = _label(r)
            ax.plot([p["tokens"] for p in r.curve], [p["encoder_ms"] for p in r.curve], "o-", label=f"{label} encoder")
            ax.plot([p["tokens"] for p in r.curve], [p["ideal_ms"] for p in r.curve], ":", label=f"{label} MACs-ideal")
            if r.curve[0]["vit_ms"] is not None:
                ax.axhline(r.curve[0]["vit_ms"], ls="--", lw=0.8, label=f"{label} plain ViT, whole model")
        ax.set(xlabel="tokens (CLS included)", ylabel="ms (batch 1)", title="Encoder latency vs token count")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "latency_vs_tokens.png", dpi=120)
        plt.close(fig)
    _histogram(results, folder, plt)
    _thresholds(results, folder, plt)


def _histogram(results: list[SourceResult], folder: Path, plt) -> None:
    counted = [r for r in results if r.counts]
    if not counted:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in counted:
        ax.hist(r.counts, bins=30, histtype="step", label=_label(r))
    ax.set(xlabel="tokens per image", ylabel="images", title="Token counts")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "tokens_histogram.png", dpi=120)
    plt.close(fig)


def _thresholds(results: list[SourceResult], folder: Path, plt) -> None:
    swept = [r for r in results if r.thresholds]
    if not swept:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in swept:
        pts = sorted(r.thresholds, key=lambda p: p["p50_ms"])
        ax.plot([p["p50_ms"] for p in pts], [100 * p["top1"] for p in pts], "o-", label=_label(r))
        for p in pts:
            ax.annotate(f"{p['threshold']:g}", (p["p50_ms"], 100 * p["top1"]), fontsize=7)
    ax.set(xlabel="p50 latency, batch 1 (ms)", ylabel="top-1 (%)", title="Gate threshold: accuracy vs latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "thresholds.png", dpi=120)
    plt.close(fig)


def _label(result: SourceResult) -> str:
    return f"{result.info.get('backend', '?')} {result.info.get('precision', '?')}"


def check_gates(report: BenchReport, min_accuracy: float | None, min_agreement: float | None) -> None:
    """Raise (the CLI exits 1) naming each engine that failed or missed a gate, and by how much."""
    problems = []
    for engine in report.engines:
        r, mine = engine.row, []
        if r["status"] == "failed":
            mine.append(f"{r['source']} failed ({r['error']})")
        if min_accuracy is not None and r["top1"] is not None and r["top1"] < min_accuracy:
            mine.append(f"{r['source']} top-1 {100 * r['top1']:.2f}% < {100 * min_accuracy:.2f}%")
        if min_agreement is not None and (r["agreement"] or 0.0) < min_agreement:
            got = "n/a" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%"
            mine.append(f"{r['source']} agreement {got} < {100 * min_agreement:.2f}%")
        if r["status"] == "validation failed" and not mine:
            mine.append(f"{r['source']} missed its precision's tolerance")
        problems += mine
    if problems:
        raise MsvitEdgeError("bench: " + "; ".join(problems))
