"""Figures: overlap heatmaps, per-layer distributions, model comparisons (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from atlas.errors import AtlasError  # noqa: E402
from atlas.query.overlap import OverlapMatrix  # noqa: E402
from atlas.store.identity import task_labels  # noqa: E402


def _target(out: str | Path) -> Path:
    """Where a figure goes: its folder must exist (nothing is created on the way)."""
    target = Path(out)
    if not target.parent.is_dir():
        raise AtlasError(f"cannot write {target}: folder {target.parent} does not exist; create "
                         "it or give another --output")
    return target


def heatmap(values: np.ndarray, rows: list[str], cols: list[str], title: str, out: str | Path,
            cbar_label: str, cmap: str = "viridis", center: bool = False, fmt: str = ".2f") -> Path:
    out = _target(out)
    width = max(5.5, 2.8 + 0.7 * len(cols))
    height = max(4.0, 1.8 + 0.45 * len(rows))
    fig, ax = plt.subplots(figsize=(width, height), dpi=130)
    kwargs = {}
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    if center:
        bound = bound or 1.0
        kwargs = {"vmin": -bound, "vmax": bound}
    image = ax.imshow(values, cmap=cmap, **kwargs)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                dark = (abs(values[i, j]) > 0.6 * bound) if center else values[i, j] < np.nanmean(values)
                ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_overlap(matrix: OverlapMatrix, out: str | Path) -> Path:
    labels = matrix.labels
    return heatmap(matrix.values, labels, labels, f"{matrix.model} · {matrix.method} sets",
                   out, matrix.measure, fmt=".2f" if matrix.measure != "n_shared" else ".0f")


def plot_layers(profiles: dict[str, np.ndarray], n_layers: int, title: str, out: str | Path) -> Path:
    out = _target(out)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=130)
    edges = np.linspace(0, 1, n_layers + 1)
    tasks = sorted(profiles)
    for task, label in zip(tasks, task_labels(tasks)):
        depths = profiles[task]
        hist, _ = np.histogram(depths, bins=edges)
        ax.plot((edges[:-1] + edges[1:]) / 2, hist / max(len(depths), 1), marker="o", ms=3,
                label=label)
    ax.set_xlabel("relative depth (layer / n_layers)")
    ax.set_ylabel("share of the set's neurons")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_compare(prof_a: dict[str, np.ndarray], prof_b: dict[str, np.ndarray], names: tuple[str, str],
                 out: str | Path) -> Path:
    out = _target(out)
    tasks = sorted(set(prof_a) & set(prof_b))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(tasks) + 2), 4.5), dpi=130)
    positions = np.arange(len(tasks))
    for offset, prof, name in ((-0.18, prof_a, names[0]), (0.18, prof_b, names[1])):
        parts = ax.violinplot([prof[t] for t in tasks], positions + offset, widths=0.33,
                              showmeans=True)
        parts["bodies"][0].set_label(name)
    ax.set_xticks(positions, task_labels(tasks), rotation=45, ha="right")
    ax.set_ylabel("relative depth")
    ax.set_title("depth of task neurons")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
