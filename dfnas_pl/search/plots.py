"""PNG plots of search progress (written next to architecture.json and sent to W&B when active)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from dfnas_pl.utils.io import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Lay out, render to PNG in memory, write atomically (a kill never leaves half a file), close."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def alpha_heatmap(path: Path, weights: dict[str, torch.Tensor], primitives: list[str], edge_names: list[str],
                  title: str) -> Path:
    """One heatmap per cell type: rows = edges, columns = ops, colour = softmax weight."""
    fig, axes = plt.subplots(1, len(weights), figsize=(4.2 * len(weights), 0.32 * len(edge_names) + 2))
    for ax, (name, w) in zip(list(axes) if len(weights) > 1 else [axes], weights.items()):
        im = ax.imshow(w.detach().cpu().numpy(), cmap="viridis", vmin=0, aspect="auto")
        ax.set_title(f"{name} cell")
        ax.set_xticks(range(len(primitives)), primitives, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(edge_names)), edge_names, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.suptitle(title)
    return save_figure(fig, path)


def line_plot(path: Path, series: dict[str, list[float]], xlabel: str, ylabel: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, values in series.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
