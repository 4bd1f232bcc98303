"""File names from untrusted strings, and the check that a path stays inside its root.

Item ids, captions, prompts, method and member names come from the user's data or settings. Any of
them that becomes part of a path goes through `safe_name` (or is checked with `check_name`), and
paths built from them can be checked with `inside`, so that no such string can make the tool write
(or read) outside its output directory (or the data folder).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import InfluenceLabError

# a plain file-name component: starts with a letter or digit (so never '.', '..', '-x' or a hidden
# file), then letters, digits, '.', '_' and '-' only (no separators, no NUL, no unicode look-alikes)
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 100
HASH_CHARS = 8


def is_safe_name(text: str, max_len: int = MAX_NAME) -> bool:
    """Whether `text` can be used as one file-name component as it is."""
    return isinstance(text, str) and len(text) <= max_len and _SAFE.fullmatch(text) is not None


def slug(text: str, max_len: int = 60, fallback: str = "item") -> str:
    """A readable, lossy file-name component: runs of other characters become '-'."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:max_len].strip("-._")
    return out if is_safe_name(out) else fallback


def safe_name(text: str, max_len: int = 60) -> str:
    """One safe file-name component for `text`: `text` itself where it already is one (so ordinary
    names do not change), otherwise its slug and a short hash of the whole string (readable, and
    distinct strings give distinct names)."""
    text = str(text)
    if is_safe_name(text, max_len):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{slug(text, max_len - HASH_CHARS - 1)}-{digest}"


def check_name(value, setting: str) -> str:
    """`value` if it is a plain file-name component; otherwise one clear error naming `setting`."""
    text = str(value)
    if not is_safe_name(text):
        raise InfluenceLabError(
            f"{setting} is '{text}'; it names output directories, "
            "so use only letters, digits, '.', '_' and "
            f"'-' (starting with a letter or digit, at most {MAX_NAME} characters)."
        )
    return text


def inside(root: Path | str, path: Path | str, what: str = "path") -> Path:
    """`path` if it lies inside `root` once both are resolved (links followed); otherwise an
    InfluenceLabError. Returns `path` unchanged."""
    try:
        base = Path(root).resolve()
        target = Path(path).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a link loop
        raise InfluenceLabError(
            f"{what} {path!r} cannot be resolved ({exc}); refusing to use it."
        ) from exc
    if target != base and base not in target.parents:
        raise InfluenceLabError(
            f"{what} {path} resolves to {target}, which is outside {base}; refusing to use it."
        )
    return Path(path)


def check_output_dir(value) -> Path:
    """`paths.output_dir` must be a directory, or a path whose first existing ancestor is one."""
    path = Path(str(value)).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise InfluenceLabError(
                    f"cannot create paths.output_dir '{value}': {p} is a file; set "
                    f"paths.output_dir to a writable directory."
                )
            break
    return path


def output_dir(settings) -> Path:
    """The root every result of a stage's `settings` is written under (`paths.output_dir`).
    `model.name` and `data.name` name the result directories below it, so they must be plain
    file-name components."""
    for setting in ("model", "data"):
        value = getattr(getattr(settings, setting, None), "name", None)
        if value is not None:
            check_name(value, f"{setting}.name")
    return Path(str(settings.paths.output_dir)).expanduser().resolve()


__all__ = ["is_safe_name", "slug", "safe_name", "check_name", "inside", "output_dir"]
