"""A report as sections of blocks (text, table, image, code), written twice: one self-contained HTML
page (images embedded as data URIs, no scripts, no network) through a Jinja2 template, and its
markdown twin with the images copied beside it."""

from __future__ import annotations

import base64
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from ..store.files import write_text
from ..store.paths import inside, safe_name


@dataclass
class Block:
    kind: str  # text | table | image | code | images (several side by side: `paths`)
    text: str = ""
    caption: str = ""
    frame: pd.DataFrame | None = None
    path: Path | None = None
    folded: bool = False  # shown under a <details> summary (its caption), closed
    paths: list[Path] = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    finding: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def cell(value) -> str:
    """A table cell: floats to 3 significant digits, NaN/None as "nan"."""
    if value is None:
        return "nan"
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.3g}"
    return str(value)


def table_html(frame: pd.DataFrame) -> str:
    return frame.map(cell).to_html(index=False, escape=True, border=0)


def table_markdown(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("influence_lab.reporting", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    shown = []
    for section in sections:
        blocks = []
        for b in section.blocks:
            shown_block = {"kind": b.kind, "caption": b.caption, "folded": b.folded}
            if b.kind == "table":
                shown_block["html"] = table_html(b.frame)
            elif b.kind in ("image", "images"):
                shown_block["kind"] = "images"
                shown_block["data"] = [_data_uri(p) for p in (b.paths or [b.path])]
            else:
                shown_block["text"] = b.text
            blocks.append(shown_block)
        shown.append(
            {
                "title": section.title,
                "slug": section.slug,
                "finding": section.finding,
                "blocks": blocks,
            }
        )
    return env.get_template("report.html.j2").render(title=title, subtitle=subtitle, sections=shown)


def render_markdown(title: str, subtitle: str, sections: list[Section], folder: Path) -> str:
    """Markdown with images copied into `folder/images/` and linked relatively."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"_{subtitle}_", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.finding:
            lines += [f"> {section.finding}", ""]
        for b in section.blocks:
            if b.kind == "text":
                lines += [b.text, ""]
            elif b.kind == "table":
                lines += [f"_{b.caption}_", "", table_markdown(b.frame), ""]
            elif b.kind in ("image", "images"):
                for path in b.paths or [b.path]:
                    name = safe_name(
                        f"{section.slug}-{Path(path).parent.name}-{Path(path).name}", 150
                    )
                    shutil.copyfile(path, inside(images, images / name, "report image"))
                    lines += [f"![{b.caption}](images/{name})", ""]
                lines += [f"_{b.caption}_", ""]
            elif b.kind == "code":
                lines += ["```yaml", b.text.rstrip(), "```", ""]
    return "\n".join(lines)


def write_report(
    folder: Path, title: str, subtitle: str, sections: list[Section]
) -> tuple[Path, Path]:
    folder = Path(folder)
    html = write_text(folder / "report.html", render_html(title, subtitle, sections))
    md = write_text(folder / "report.md", render_markdown(title, subtitle, sections, folder))
    return html, md
