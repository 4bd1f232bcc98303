"""The run store: signature-named directories, atomic writes, `done` markers, hashes and claims.

A directory is complete only when its `done` marker exists and every file it lists still has the
SHA-256 recorded when the marker was written: a truncated or altered file makes the result count
as missing, so it is rebuilt, never silently used. Every file is written to a temporary name in
the same directory and renamed, so a killed process never leaves a half-written file. A claim
(an advisory file lock, released by the kernel when its process dies) keeps two processes from
computing the same result at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InfluenceLabError

T = TypeVar("T")

DONE = "done"
# folders of a result that are resumable state or logs, not part of the result: not hashed
UNHASHED = ("checkpoints", "packs", "hydra", "jobs", "csv", "wandb")
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and rename the result onto `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InfluenceLabError(
            f"cannot write {path}: {exc.strerror}; check paths.output_dir."
        ) from exc
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
    """Save a numpy array atomically (np.save would add '.npy' to a temp name, so write a
    handle)."""
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


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256(path: Path) -> str:
    """The file's SHA-256, memoised by (path, size, mtime) so unchanged files are read once."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def hash_files(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a result (relative path -> hex), leaving out markers, temporary
    files, locks and the folders in UNHASHED."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if (
            not path.is_file()
            or rel.parts[0] in UNHASHED
            or rel.name == DONE
            or rel.name.endswith(".done")
            or any(part.startswith(".") for part in rel.parts)
        ):
            continue
        out[rel.as_posix()] = sha256(path)
    return out


def changed_files(folder: Path, hashes: dict[str, str]) -> list[str]:
    """The files of `hashes` that are missing or no longer have their recorded hash."""
    folder = Path(folder).resolve()
    # a listed path that leaves the folder (a tampered marker) counts as changed, and is never read
    return [
        rel
        for rel, digest in hashes.items()
        if not (folder / rel).resolve().is_relative_to(folder)
        or not (folder / rel).is_file()
        or sha256(folder / rel) != digest
    ]


def verify_result(folder: Path, files: list[str] | None = None) -> None:
    """Refuse (InfluenceLabError) a finished result whose files changed after they were written."""
    marker = Path(folder) / DONE
    if not marker.exists():
        return
    hashes = read_json(marker).get("sha256") or {}
    if files is not None:
        hashes = {k: v for k, v in hashes.items() if k in files}
    bad = changed_files(folder, hashes)
    if bad:
        raise InfluenceLabError(
            f"{folder}/{bad[0]} does not match the SHA-256 recorded when it was written "
            "(truncated or altered); "
            f"run the stage that made it again to rebuild it, or delete {folder}."
        )


def marker_intact(marker: Path, folder: Path) -> bool:
    """Whether `marker` exists and every file it lists under `folder` still has the hash recorded
    when it was written. A damaged result is reported once and its marker removed, so it counts as
    missing and is rebuilt. (Markers without hashes, from older versions, count as intact.)"""
    if not marker.exists():
        return False
    try:
        hashes = read_json(marker).get("sha256") or {}
    except (json.JSONDecodeError, OSError):
        hashes = None
    bad = [marker.name] if hashes is None else changed_files(folder, hashes)
    if bad:
        from rich.console import Console

        Console(stderr=True).print(
            f"[yellow]warning:[/] {folder}/{bad[0]} changed after it was written "
            f"(hash mismatch: truncated or altered); rebuilding this result",
            highlight=False,
        )
        marker.unlink(missing_ok=True)
        return False
    return True


@contextmanager
def claim(lock_path: Path, what: str = "", wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on `lock_path`. flock locks die with their process, so a
    killed job never leaves a stale claim. Held by another process: wait for it (saying so), or
    with `wait=False` hold nothing and yield False at once."""
    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            yield False
            return
        from rich.console import Console

        Console(stderr=True).print(
            f"waiting for another process that is computing {what or lock_path} ...",
            highlight=False,
        )
        lock.acquire()
    try:
        yield True
    finally:
        lock.release()


class RunDir:
    """One stage result: `<root>/<stage>/<name>-<signature>/` with a `done` marker."""

    def __init__(self, root: Path | str, stage: str, name: str, sig: str):
        self.stage = stage
        self.signature = sig
        self.root = Path(root)
        self.path = self.root / stage / f"{name}-{sig}"

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def done(self) -> bool:
        """Finished, and every file still has the hash recorded when it was written. A changed
        file is reported once and the result counts as missing, so it is rebuilt."""
        return marker_intact(self.path / DONE, self.path)

    @contextmanager
    def claim(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive right to compute this result (see `claim`). The lock lives under
        `<root>/.locks/`, so `prepare(force=True)` can clear the folder while holding it."""
        with claim(self.lock_path(), str(self.path), wait) as mine:
            yield mine

    def prepare(self, force: bool = False) -> None:
        """Make the directory; with `force`, clear a previous result first."""
        if force and self.path.exists():
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InfluenceLabError(
                f"cannot create {self.path}: {exc.strerror}; "
                "set paths.output_dir to a writable directory."
            ) from exc
        # a previous, unfinished attempt must not count as complete
        (self.path / DONE).unlink(missing_ok=True)

    def lock_path(self) -> Path:
        return self.root / ".locks" / self.stage / f"{self.path.name}.lock"

    def compute_if_free(self, compute: Callable[[], Any]) -> bool:
        """`compute_once`, unless another process holds the claim: then nothing, at once. True
        when the result is done afterwards (the caller comes back later for one that was busy)."""
        if self.done:
            return True
        with self.claim(wait=False) as mine:
            if mine:
                self._compute_claimed(lambda: None, compute)
        return mine

    def compute_once(self, load: Callable[[], T], compute: Callable[[], T]) -> T:
        """This result, computed once across processes: under the run's claim, `load()` when it is
        done, else `compute()` (which writes the result's files) into a prepared folder, then
        marked done. A process that finds another computing it waits, then loads."""
        with self.claim():
            return self._compute_claimed(load, compute)

    def _compute_claimed(self, load: Callable[[], T], compute: Callable[[], T]) -> T:
        if self.done:
            return load()
        self.prepare()
        value = compute()
        self.mark_done()
        return value

    def mark_done(self, info: dict[str, Any] | None = None) -> None:
        """Record completion with the SHA-256 of every file of the result."""
        write_json(
            self.path / DONE,
            {
                "finished": time.time(),
                "signature": self.signature,
                **(info or {}),
                "sha256": hash_files(self.path),
            },
        )

    def __repr__(self) -> str:
        return f"RunDir({self.path}, done={self.done})"
