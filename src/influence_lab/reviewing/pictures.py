"""What the review app shows of a study: its training items and generated outputs, as PNG bytes
(images) or text, looked up by the study's own keys. A request names a candidate or a task by its
number in the database; no part of a request becomes a file path."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

SIDE = 112  # pixels of a shown image's longer side (small images are scaled up, nearest pixel)


def png(image: np.ndarray, side: int = SIDE) -> bytes:
    """A (C, H, W) image in [0, 1] as PNG bytes, grey or RGB, scaled up by whole pixels."""
    arr = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    arr = (arr * 255).round().astype(np.uint8)
    pic = (
        Image.fromarray(arr[0], "L")
        if arr.shape[0] == 1
        else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    )
    scale = max(1, side // max(pic.size))
    pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    out = io.BytesIO()
    pic.save(out, format="PNG")
    return out.getvalue()


@dataclass
class StudyContent:
    """The items a study's candidates name and each task's outputs (by the attribution table's
    target): arrays for images, strings for text. PNGs are made once and kept."""

    kind: str  # "image" or "text"
    items: dict[str, object]  # item id -> (C, H, W) array or text
    outputs: list[list[object]]  # per target: its outputs
    _pngs: dict = field(default_factory=dict, repr=False)

    def item_png(self, item_id: str) -> bytes:
        key = ("item", item_id)
        if key not in self._pngs:
            self._pngs[key] = png(self.items[item_id])
        return self._pngs[key]

    def output_png(self, target: int, j: int) -> bytes:
        key = ("output", target, j)
        if key not in self._pngs:
            self._pngs[key] = png(self.outputs[target][j])
        return self._pngs[key]


def study_content(bundle, outputs: list, item_ids: set[str]) -> StudyContent:
    """The content of `item_ids` from the data bundle's training split, and the outputs."""
    ids = list(bundle.train["id"])
    wanted = [i for i, item_id in enumerate(ids) if item_id in item_ids]
    column = "image" if bundle.kind == "image" else "text"
    rows = bundle.train.select(wanted)
    items = {
        item_id: (np.asarray(v, dtype=np.float32) if bundle.kind == "image" else str(v))
        for item_id, v in zip(rows["id"], rows[column], strict=True)
    }
    shown = [
        [np.asarray(o) if bundle.kind == "image" else str(o) for o in group] for group in outputs
    ]
    return StudyContent(bundle.kind, items, shown)
