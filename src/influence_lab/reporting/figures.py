"""Pictures: grids of images with a label per row, plain-text listings for texts, and a model's
samples drawn either way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..store.files import atomic_write  # noqa: E402

if TYPE_CHECKING:
    from ..models.protocol import GenerativeModel


def show_image(ax, img) -> None:
    """One (C, H, W) image in [0, 1]; a grey one white on black, as the data holds it (so an item
    captioned "light" looks light in every picture)."""
    grey = img.shape[0] == 1
    ax.imshow(
        img[0] if grey else img.transpose(1, 2, 0),
        cmap="gray" if grey else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )


def plain(text) -> str:
    """`text` (an id, caption or prompt from the data) as matplotlib shows it literally: every '$'
    escaped, so a string with two '$' is never parsed as TeX (which fails on a bad one, and ignores
    `parse_math=False` when it wraps text)."""
    return str(text).replace("$", r"\$")


def image_grid(images: np.ndarray, row_labels: list[str], path: Path, title: str = "") -> Path:
    """`images` (rows, cols, C, H, W) in [0, 1]; one label per row, drawn at its left. One channel
    is drawn with value = brightness (white on black, as MNIST and Fashion-MNIST are shown), so a
    Fashion-MNIST prompt's "dark" and "light" (the mean pixel value) read as they look."""
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(
        rows,
        cols + 1,
        figsize=(1.0 * cols + 2.8, 1.0 * rows + 0.4),
        squeeze=False,
        gridspec_kw={"width_ratios": [2.8] + [1] * cols},
    )
    for r in range(rows):
        axes[r, 0].axis("off")
        axes[r, 0].text(
            1.0, 0.5, plain(row_labels[r]), ha="right", va="center", fontsize=8, wrap=True
        )
        for c in range(cols):
            img = images[r, c]
            ax = axes[r, c + 1]
            show_image(ax, img)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(plain(title), fontsize=10)
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=90, format="png"))
    plt.close(fig)
    return Path(path)


def text_listing(
    texts: list[list[str]], row_labels: list[str], path: Path, title: str = ""
) -> Path:
    lines = [title, ""] if title else []
    for label, row in zip(row_labels, texts, strict=True):
        lines.append(f"{label}: {', '.join(row)}")
    atomic_write(Path(path), lambda p: p.write_text("\n".join(lines) + "\n"))
    return Path(path)


def draw(outputs, prompts: list[str], stem: Path, title: str) -> Path:
    """A grid PNG of image outputs (prompts x seeds), or a text file listing text outputs."""
    if isinstance(outputs, np.ndarray):
        return image_grid(outputs, prompts, Path(f"{stem}.png"), title)
    return text_listing(outputs, prompts, Path(f"{stem}.txt"), title)


def draw_samples(
    model: GenerativeModel, prompts: list[str], m: int, stem: Path, title: str
) -> Path:
    # imported here: the models pull in torch and Lightning, which the report stage (it draws
    # from saved outputs only) does not need
    from ..models.sampling import output_seeds, sample_grid

    return draw(sample_grid(model, prompts, output_seeds(m)), prompts, stem, title)
