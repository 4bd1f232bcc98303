"""The run store: signature-named directories, atomic writes, `done` markers.

A directory is complete only when its `done` marker exists. Every file is written to a temporary
name in the same directory and renamed, so a killed process never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InfluenceLabError

DONE = "done"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InfluenceLabError(f"cannot write {path}: {exc.strerror}; check paths.output_dir.") from exc
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_npy(path: Path, array) -> Path:
    """Save a numpy array atomically (np.save would add '.npy' to a temp name, so write a handle)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, write)


def write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    """One stage result: `<root>/<stage>/<name>-<signature>/` with a `done` marker."""

    def __init__(self, root: Path | str, stage: str, name: str, sig: str):
        self.stage = stage
        self.signature = sig
        self.path = Path(root) / stage / f"{name}-{sig}"

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()

    def prepare(self, force: bool = False) -> None:
        """Make the directory; with `force`, clear a previous result first."""
        if force and self.path.exists():
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfluenceLabError(
                f"cannot create {self.path}: {exc.strerror}; set paths.output_dir to a writable directory."
            ) from exc
        # a previous, unfinished attempt must not count as complete
        (self.path / DONE).unlink(missing_ok=True)

    def mark_done(self, info: dict[str, Any] | None = None) -> None:
        write_json(self.path / DONE, {"finished": time.time(), "signature": self.signature, **(info or {})})

    def __repr__(self) -> str:
        return f"RunDir({self.path}, done={self.done})"
