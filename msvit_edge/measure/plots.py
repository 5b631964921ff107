"""bench's plots: which series each one draws, and in which colour and style (pure, tested), then the drawing.

Every series is told apart twice, by colour and by line or marker style, and named in the legend: one colour and
marker per engine, one line style per kind of series (measured, MACs-ideal, plain ViT). A series identical to one
already drawn (INT8 and FP32 token counts are: the tokenizer runs FP32 at every precision) is drawn once, its label
naming every engine it stands for, and the figure says so in a note.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

from msvit_edge.measure.record import SourceResult

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = {"encoder": "-", "MACs-ideal": ":", "plain ViT": "--", "counts": "-"}


@dataclass(frozen=True)
class Series:
    """One line (or step histogram) of a plot."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]  # empty for a histogram: ``x`` holds its values
    color: str
    line: str  # matplotlib line style
    marker: str
    points: tuple[str, ...] = ()  # a label beside each point (the thresholds of a sweep)


@dataclass(frozen=True)
class Figure:
    series: list[Series]
    notes: list[str]  # printed under the plot


def engine_labels(results: list[SourceResult]) -> list[str]:
    """ "backend precision" per engine, with the engine's folder name where two would read the same."""
    plain = [f"{r.info.get('backend', '?')} {r.info.get('precision', '?')}" for r in results]
    return [p if plain.count(p) == 1 else f"{p} ({Path(r.source).name})" for p, r in zip(plain, results, strict=True)]


def _style(index: int) -> tuple[str, str]:
    return COLORS[index % len(COLORS)], MARKERS[index % len(MARKERS)]


def curve_figure(results: list[SourceResult]) -> Figure:
    """latency_vs_tokens.png: per engine its encoder at each bucket's maximum, the MACs-ideal line from its
    all-fine time, and its own plain ViT (whole model, all-fine tokens) as a level line across the token range."""
    series = []
    for i, (r, label) in enumerate(zip(results, engine_labels(results), strict=True)):
        if not r.curve:
            continue
        color, marker = _style(i)
        x = tuple(float(p["tokens"]) for p in r.curve)
        for kind, key in (("encoder", "encoder_ms"), ("MACs-ideal", "ideal_ms")):
            y = tuple(float(p[key]) for p in r.curve)
            series.append(Series(f"{label}: {kind}", x, y, color, LINES[kind], marker if kind == "encoder" else ""))
        if r.curve[0].get("vit_ms") is not None:
            y = (float(r.curve[0]["vit_ms"]),) * len(x)
            series.append(Series(f"{label}: plain ViT, whole model", x, y, color, LINES["plain ViT"], ""))
    return dedupe(series)


def histogram_figure(results: list[SourceResult]) -> Figure:
    """tokens_histogram.png: the token count of every measured image, per engine."""
    series = [
        Series(label, tuple(float(c) for c in r.counts), (), _style(i)[0], LINES["counts"], "")
        for i, (r, label) in enumerate(zip(results, engine_labels(results), strict=True))
        if r.counts
    ]
    figure = dedupe(series)  # then a line style per histogram left, so that no two look alike without colour
    return Figure([replace(s, line=("-", "--", ":", "-.")[i % 4]) for i, s in enumerate(figure.series)], figure.notes)


def dedupe(series: list[Series]) -> Figure:
    """Each distinct series once; one that repeats another's values joins its label, and a note says which."""
    kept: dict[tuple, Series] = {}
    names: dict[tuple, list[str]] = {}
    for s in series:
        key = (s.x, s.y, s.line)
        if key not in kept:
            kept[key], names[key] = s, []
        names[key].append(s.label)
    out, notes = [], []
    for key, s in kept.items():
        if len(names[key]) > 1:
            s = replace(s, label=" = ".join(names[key]))
            notes.append(f"identical, drawn once: {' and '.join(names[key])}")
        out.append(s)
    return Figure(out, notes)


def count_bins(values: tuple[float, ...]) -> list[float]:
    """One bin per token count an image can have: counts step by 3 (a fine region is 4 tokens instead of 1)."""
    distinct = sorted({int(v) for v in values})
    step = math.gcd(*(b - a for a, b in itertools.pairwise(distinct))) or 1
    return [distinct[0] - step / 2 + k * step for k in range((distinct[-1] - distinct[0]) // step + 2)]


def draw(figure: Figure, path: Path, axes: dict, histogram: bool = False) -> None:
    """Draw ``figure`` into ``path``; ``axes``: xlabel, ylabel, title."""
    import matplotlib  # lazy: slow to import, and only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in figure.series:
        if histogram:
            ax.hist(
                s.x,
                bins=count_bins(s.x),
                histtype="step",
                color=s.color,
                linestyle=s.line,
                linewidth=1.6,
                label=s.label,
            )
        else:
            ax.plot(s.x, s.y, color=s.color, linestyle=s.line, marker=s.marker or None, label=s.label)
        for x, y, text in zip(s.x, s.y, s.points, strict=False):
            ax.annotate(text, (x, y), fontsize=7)
    ax.set(**axes)
    ax.legend(fontsize=7)
    if figure.notes:
        fig.text(0.01, 0.01, "; ".join(figure.notes), fontsize=7, va="bottom")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plots(results: list[SourceResult], folder: Path) -> None:
    """latency_vs_tokens.png, tokens_histogram.png and, with a threshold sweep, thresholds.png into ``folder``."""
    curve = curve_figure(results)
    if curve.series:
        axes = {"xlabel": "tokens (CLS included)", "ylabel": "ms (batch 1)", "title": "Encoder latency vs tokens"}
        draw(curve, folder / "latency_vs_tokens.png", axes)
    counts = histogram_figure(results)
    if counts.series:
        axes = {"xlabel": "tokens per image", "ylabel": "images", "title": "Token counts"}
        draw(counts, folder / "tokens_histogram.png", axes, histogram=True)
    sweep = threshold_figure(results)
    if sweep.series:
        metrics = " / ".join(dict.fromkeys("mIoU" if r.dense else "top-1" for r in results if r.thresholds))
        axes = {"xlabel": "p50 latency, batch 1 (ms)", "ylabel": f"{metrics} (%)", "title": "Gate threshold"}
        draw(sweep, folder / "thresholds.png", axes)


def threshold_figure(results: list[SourceResult]) -> Figure:
    """thresholds.png: accuracy (a segmentation source's mIoU) against batch-1 latency at each swept gate threshold
    (beside its point), per engine."""
    series = []
    for i, (r, label) in enumerate(zip(results, engine_labels(results), strict=True)):
        points = sorted(r.thresholds, key=lambda p: p["p50_ms"])
        key = "miou" if r.dense else "top1"
        if points:
            x = tuple(p["p50_ms"] for p in points)
            y = tuple(math.nan if p[key] is None else 100 * p[key] for p in points)
            color, marker = _style(i)
            series.append(Series(label, x, y, color, "-", marker, tuple(f"{p['threshold']:g}" for p in points)))
    return dedupe(series)
