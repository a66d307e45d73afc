"""The report's charts: matplotlib figures (its object API, no pyplot state, Agg canvas) as inline PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Sequence

from .collect import Series

WIDTH, HEIGHT, DPI = 6.4, 3.2, 100  # inches, dots per inch: 640 x 320 pixels


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    return fig, fig.subplots()


def _png(fig) -> str:
    """The figure as a data URI (a Figure without pyplot draws on the Agg canvas)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def line_chart(title: str, lines: Sequence[Series], ylabel: str, *, mark: tuple[int, float, str] | None = None) -> str:
    """Lines over training steps; `mark` (step, value, label) puts a labelled star on one point (the kept best/).

    `train X` and `valid X` share X's colour, the validation line dashed."""
    fig, ax = _figure()
    colours: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    for line in lines:
        kind, _, name = line.label.partition(" ")
        colour = colours.setdefault(name or kind, palette[len(colours) % len(palette)])
        ax.plot(line.steps, line.values, label=line.label, color=colour, linestyle="--" if kind == "valid" else "-",
                marker="o" if len(line.steps) < 30 else None, markersize=3)
    if mark is not None:
        step, value, label = mark
        ax.axvline(step, color="#999", linewidth=1, linestyle=":")
        ax.plot([step], [value], marker="*", markersize=14, color="#d62728", linestyle="none", label=label)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(lines) > 1 or mark is not None:
        ax.legend(fontsize=7, ncols=2 if len(lines) > 6 else 1)
    return _png(fig)


def bar_chart(title: str, groups: Sequence[str], bars: Sequence[tuple[str, Sequence[float | None]]],
              ylabel: str) -> str:
    """Grouped bars: one group per name in `groups` (metrics, popularity buckets), one bar per (label, values)."""
    fig, ax = _figure()
    width = 0.8 / max(len(bars), 1)
    for j, (label, values) in enumerate(bars):
        xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=label,
               hatch="//" if label == "popularity" else None, edgecolor="white")
    ax.set_xticks(range(len(groups)), groups, fontsize=8, rotation=30 if len(groups) > 6 else 0)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
