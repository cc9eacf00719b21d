"""Probe results as the authors lay them out (``probe_results/results_<n>.csv``) and as a figure.

The authors' probing script writes ``probe_results/results_<n>.csv`` (README); its columns were not available
to us, so ours are one row per backbone x method x task x probe kind for truncation length ``n``
(:data:`COLUMNS`). The figure shows the mean F1 over tasks per method, by truncation length, one panel per
backbone and probe kind.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("backbone", "method", "n_latents", "k", "task", "kind", "trunc_length", "f1")


def write_probe_tables(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Write ``folder/results_<n>.csv`` for every truncation length ``n`` in ``rows``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in sorted({r["trunc_length"] for r in rows}):
        path = folder / f"results_{n}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({c: r[c] for c in COLUMNS} for r in rows if r["trunc_length"] == n)
        paths.append(path)
    return paths


def plot_probe_f1(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped bars of the mean probe F1 over tasks: x = truncation length, one bar per method; one panel
    per (probe kind, backbone). Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lengths = sorted({r["trunc_length"] for r in rows})
    fig, axes = plt.subplots(
        len(kinds), len(backbones), figsize=(4 * len(backbones), 3 * len(kinds)), squeeze=False, sharey=True
    )
    width = 0.8 / len(methods)
    for i, kind in enumerate(kinds):
        for j, backbone in enumerate(backbones):
            ax = axes[i][j]
            for m, method in enumerate(methods):
                means = [
                    np.mean(
                        [
                            r["f1"]
                            for r in rows
                            if (r["kind"], r["backbone"], r["method"], r["trunc_length"])
                            == (kind, backbone, method, n)
                        ]
                    )
                    for n in lengths
                ]
                ax.bar(np.arange(len(lengths)) + m * width, means, width, label=method)
            ax.set_xticks(np.arange(len(lengths)) + 0.4 - width / 2, [f"n={n}" for n in lengths])
            ax.set_title(f"{backbone} · {kind}")
            ax.set_ylim(0, 1)
            if j == 0:
                ax.set_ylabel("mean probe F1")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 6), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
