"""Pareto (trade-off) plots, e.g. FVU against L0, written as byte-reproducible PNGs.

A point is on the Pareto front when no other point is at least as good on both axes and better on one
(lower is better on both by default: fewer active latents, less unexplained variance). The plot draws each
series' points and its front as a step line. The PNG carries no metadata (matplotlib's ``Software`` entry is
removed), so the same points always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

__all__ = ["pareto_front", "plot_pareto"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates: lower is better), sorted by x then y.

    ``points`` is a sequence of ``(x, y)``. Equal points are all kept (none strictly dominates another).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], float("inf")
    for i in order:
        x, y = points[i]
        if y < best_y or (front and points[front[-1]] == (x, y)):
            front.append(i)
            best_y = min(best_y, y)
    return front


def plot_pareto(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    log_x: bool | None = None,
) -> Path:
    """Scatter each named series of ``(x, y)`` points with its Pareto front and save a PNG at ``path``.

    Series are drawn in sorted name order with fixed colours and markers. ``log_x=None`` picks a log x axis
    when the positive x values span more than a factor of 10. Returns ``path``.
    """
    if not series or not any(series.values()):
        raise ValueError("plot_pareto needs at least one series with at least one point")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    palette = [f"C{i % 10}" for i in range(len(series))]
    for i, name in enumerate(sorted(series)):
        points = list(series[name])
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes.scatter(xs, ys, color=palette[i], marker=_MARKERS[i % len(_MARKERS)], label=name, zorder=3)
        front = [points[j] for j in pareto_front(points)]
        if len(front) > 1:
            fx, fy = zip(*front, strict=True)
            axes.step(fx, fy, where="post", color=palette[i], alpha=0.6, linewidth=1.2)
    all_x = [x for pts in series.values() for x, _ in pts if x > 0]
    if log_x is None:
        log_x = bool(all_x) and max(all_x) > 10 * min(all_x)
    if log_x:
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100, ...
        axes.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers rather than 10^1, 2x10^1
        axes.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short range
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})
    return path
