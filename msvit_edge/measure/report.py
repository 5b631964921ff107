"""``bench`` reports: the status table, JSON (versioned schema, docs/bench-report.md), CSV, Markdown and plots.

Written into one folder atomically: a run that fails half way leaves the previous report as it was.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict
from pathlib import Path

from msvit_edge.errors import MsvitEdgeError
from msvit_edge.io import FolderKind, atomic_dir, check_output, write_json

SCHEMA_VERSION = 1
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


def assemble(cfg, device: str, results: list) -> dict:
    """The report: settings, environment, and per source its measurements and status row."""
    from msvit_edge.machine.environment import this_machine

    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device,
        "settings": asdict(cfg),
        "environment": this_machine(),
        "engines": [asdict(r) | {"row": row(r)} for r in results],
    }


def row(result) -> dict:
    """The status-table row of one source (None where not measured)."""
    lat, acc, info = result.latency, result.accuracy, result.info
    smallest, largest = (lat[min(lat, key=int)], lat[max(lat, key=int)]) if lat else ({}, {})
    meaningless = info.get("latency_only")
    return {
        "source": result.source,
        "status": result.status,
        "backend": info.get("backend"),
        "precision": info.get("precision"),
        "size_mb": info.get("size_mb"),
        "top1": None if meaningless else acc.get("top1"),
        "agreement": acc.get("agreement"),
        "p50_ms": smallest.get("p50_ms"),
        "images_per_s": largest.get("images_per_s"),
        "speedup": smallest.get("speedup"),
        "efficiency": smallest.get("efficiency"),
        "error": result.error,
    }


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


def table(report: dict) -> str:
    """The status table as Markdown (the console shows the same)."""
    head = ["engine", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for engine in report["engines"]:
        r = engine["row"]
        cells = [Path(r["source"]).name or r["source"], *(_cell(k, r[k]) for k, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {e['row']['source']}: {e['row']['error']}" for e in report["engines"] if e["row"]["error"]]
    if any(e["info"].get("latency_only") for e in report["engines"]):
        notes.append("- random weights (latency-only bundle): top-1 means nothing and is not shown")
    return "\n".join(lines + notes)


def result_line(result) -> str:
    r = row(result)
    return f"  {r['status']}" + (f": {r['error']}" if r["error"] else "")


def write(report: dict, results: list, out: str | Path, force: bool) -> None:
    """report.json, report.csv, report.md and the plots, into ``out`` atomically."""
    with atomic_dir(out, FOLDER, force) as tmp:
        write_json(tmp / "report.json", report)
        (tmp / "report.csv").write_text(_csv(report))
        (tmp / "report.md").write_text(markdown(report))
        plots(results, tmp)


def _csv(report: dict) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(report["engines"][0]["row"]) if report["engines"] else ["source"])
    writer.writeheader()
    for engine in report["engines"]:
        writer.writerow(engine["row"])
    return buffer.getvalue()


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# msvit-edge bench",
        "",
        f"{report['created']} on {report['device']}: {_device_line(env)}",
        "",
        table(report),
        "",
    ]
    for engine in report["engines"]:
        lines += _engine_section(engine)
    return "\n".join(lines) + "\n"


def _device_line(env: dict) -> str:
    from msvit_edge.machine.environment import device_description

    return device_description(env)


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


def _engine_section(engine: dict) -> list[str]:
    error = f" ({engine['error']})" if engine["error"] else ""
    lines = [f"## {engine['source']}", "", f"status: {engine['status']}{error}"]
    if engine["accuracy"].get("images"):
        lines.append(f"images: {engine['accuracy']['images']}")
    if engine["latency"]:
        lines += ["", "| " + " | ".join(LATENCY_HEAD) + " |", "|" + "---|" * len(LATENCY_HEAD)]
        lines += [_latency_row(batch, lat) for batch, lat in engine["latency"].items()]
    if engine["power"]:
        p = engine["power"]
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


def plots(results: list, folder: Path) -> None:
    """latency_vs_tokens.png, tokens_histogram.png and, with a threshold sweep, thresholds.png."""
    import matplotlib

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


def _histogram(results: list, folder: Path, plt) -> None:
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


def _thresholds(results: list, folder: Path, plt) -> None:
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


def _label(result) -> str:
    return f"{result.info.get('backend', '?')} {result.info.get('precision', '?')}"


def check_gates(report: dict, min_accuracy: float | None, min_agreement: float | None) -> None:
    """Raise (the CLI exits 1) naming each engine that failed or missed a gate, and by how much."""
    problems = []
    for engine in report["engines"]:
        r, mine = engine["row"], []
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
