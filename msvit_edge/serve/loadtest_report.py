"""A load test's report, in the bench report's formats: ``report.json``, ``report.csv`` (one row per concurrency
level) and ``report.md`` (the same table), written atomically to a folder ``--force`` may replace only if it is one."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from msvit_edge.io import FolderKind, atomic_dir
from msvit_edge.serve.loadtest import LoadResult

SCHEMA_VERSION = 1
FOLDER = FolderKind(
    "a load-test report",
    "report.json",
    lambda r: r.get("kind") == "loadtest",
    ("report.json", "report.csv", "report.md"),
)
COLUMNS = ("concurrency", "requests", "answered", "errors", "req_per_s", "p50_ms", "p90_ms", "p99_ms", "top1_agreement")


def rows(results: list[LoadResult]) -> list[dict]:
    """One row per concurrency level, the table's columns plus the batch sizes Triton formed."""
    return [
        {
            "concurrency": r.concurrency,
            "requests": r.requests,
            "answered": r.answered,
            "errors": r.errors,
            "req_per_s": round(r.per_second, 1),
            "p50_ms": round(r.p50_ms, 3),
            "p90_ms": round(r.p90_ms, 3),
            "p99_ms": round(r.p99_ms, 3),
            "top1_agreement": r.top1_agreement,
            "batches": {str(size): n for size, n in sorted(r.batches.items())},
        }
        for r in results
    ]


def write_report(results: list[LoadResult], out: str | Path, settings: dict, force: bool = False) -> Path:
    """``out``/report.{json,csv,md} for the levels measured; returns ``out``."""
    table = rows(results)
    report = {"schema_version": SCHEMA_VERSION, "kind": "loadtest", "created": datetime.now().isoformat(),
              "settings": settings, "levels": table}  # fmt: skip
    with atomic_dir(out, FOLDER, force) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.csv").write_text(_csv(table))
        (tmp / "report.md").write_text(_markdown(table, settings))
    return Path(out)


def _csv(table: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return text.getvalue()


def _markdown(table: list[dict], settings: dict) -> str:
    lines = [f"# Load test of {settings.get('url')}", "", "| " + " | ".join(COLUMNS) + " | batch sizes formed |"]
    lines.append("|" + "---|" * (len(COLUMNS) + 1))
    for row in table:
        cells = ["-" if row[c] is None else f"{row[c]:.2%}" if c == "top1_agreement" else str(row[c]) for c in COLUMNS]
        batches = ", ".join(f"{size}: {n}" for size, n in row["batches"].items()) or "-"
        lines.append("| " + " | ".join([*cells, batches]) + " |")
    return "\n".join(lines) + "\n"
