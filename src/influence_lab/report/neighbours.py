"""Neighbour grids: a prompt's outputs, then its top training items with captions and scores."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..orchestration.store import atomic_write  # noqa: E402
from .figures import plain  # noqa: E402


def _show(ax, img):
    grey = img.shape[0] == 1
    ax.imshow(img[0] if grey else img.transpose(1, 2, 0), cmap="gray_r" if grey else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def neighbour_grid(prompt: str, method: str, outputs: np.ndarray, neighbours: np.ndarray, labels: list[str],
                   path: Path) -> Path:
    cols = max(len(outputs), len(neighbours))
    fig, axes = plt.subplots(2, cols, figsize=(1.35 * cols, 3.6), squeeze=False)
    for c in range(cols):
        for r in range(2):
            axes[r, c].axis("off")
        if c < len(outputs):
            axes[0, c].axis("on")
            _show(axes[0, c], outputs[c])
            axes[0, c].set_title(f"output {c}", fontsize=7)
        if c < len(neighbours):
            axes[1, c].axis("on")
            _show(axes[1, c], neighbours[c])
            axes[1, c].set_title(plain("\n".join(textwrap.wrap(labels[c], 16))), fontsize=5.5)
    fig.suptitle(plain(f"{method}: '{prompt}'\ntop: generated outputs; bottom: most influential training items"),
                 fontsize=8)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)


def neighbour_text(prompt: str, method: str, outputs: list[str], rows, path: Path) -> Path:
    lines = [f"{method}: '{prompt}'", f"outputs: {', '.join(outputs)}", "most influential training items:"]
    for r in rows:
        lines.append(f"  {r['rank']:>3}. {r['id']:<24} {r['caption']:<20} score {r['score']:.4g}")
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines) + "\n"))
    return Path(path)
