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
    kind: str  # text | table | image | code
    text: str = ""
    caption: str = ""
    frame: pd.DataFrame | None = None
    path: Path | None = None


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    finding: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def cell(value) -> str:
    """A table cell: floats to 4 significant digits, NaN/None as "nan"."""
    if value is None:
        return "nan"
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def table_html(frame: pd.DataFrame) -> str:
    return frame.map(cell).to_html(index=False, escape=True, border=0)


def table_markdown(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("influence_lab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    shown = []
    for section in sections:
        blocks = []
        for b in section.blocks:
            if b.kind == "table":
                blocks.append({"kind": "table", "caption": b.caption, "html": table_html(b.frame)})
            elif b.kind == "image":
                data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                blocks.append({"kind": "image", "caption": b.caption, "data": data})
            else:
                blocks.append({"kind": b.kind, "text": b.text})
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
            elif b.kind == "image":
                name = safe_name(
                    f"{section.slug}-{Path(b.path).parent.name}-{Path(b.path).name}", 150
                )
                shutil.copyfile(b.path, inside(images, images / name, "report image"))
                lines += [f"![{b.caption}](images/{name})", "", f"_{b.caption}_", ""]
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
