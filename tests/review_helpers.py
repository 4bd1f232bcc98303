"""A review study made without training anything: a fake attribute run (attribution.parquet of a
few prompts, items and methods) and its content (random 8x8 images), served by uvicorn in a thread
or, for the load test, in its own process (`python -m tests.review_helpers URL FOLDER PORT`)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("fused", "paper", "raw_only")


def fake_attribute_run(folder: Path, targets: int = 4, items: int = 30, seed: int = 0) -> Path:
    """attribution.parquet: per target and method, 10 ranked items of `items` (methods overlap)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(targets):
        for method in METHODS:
            picked = rng.choice(items, size=10, replace=False)
            for rank, i in enumerate(picked, start=1):
                rows.append(
                    {
                        "target": t,
                        "prompt": f"prompt {t}",
                        "method": method,
                        "rank": rank,
                        "id": f"item-{i:03d}",
                        "caption": f"caption of item {i}",
                        "score": float(rng.normal()),
                    }
                )
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "attribution.parquet", index=False)
    return folder


def fake_content(items: int = 30, targets: int = 4, seed: int = 0):
    from influence_lab.reviewing.pictures import StudyContent

    rng = np.random.default_rng(seed)
    return StudyContent(
        "image",
        {f"item-{i:03d}": rng.random((1, 8, 8)).astype(np.float32) for i in range(items)},
        [[rng.random((1, 8, 8)) for _ in range(3)] for _ in range(targets)],
    )


def build(url: str, folder: Path, top_k: int = 5, signature: str = "fake0001"):
    """(engine, study, content) of the fake run in `folder` (made when missing)."""
    from influence_lab.reviewing.database import open_database
    from influence_lab.reviewing.study import open_study

    if not (folder / "attribution.parquet").exists():
        fake_attribute_run(folder)
    engine = open_database(url)
    study = open_study(engine, "fake-data", folder, signature, top_k)
    return engine, study, fake_content()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the stage's own helper)."""
    from influence_lab.stages.review import free_port as stage_free_port

    return stage_free_port("127.0.0.1")


class ThreadServer:
    """The app served by uvicorn on 127.0.0.1 in a daemon thread: `with ThreadServer(app) as
    url`."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the review server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def main(url: str, folder: str, port: str) -> None:
    import uvicorn

    from influence_lab.reviewing.app import create_app

    engine, study, content = build(url, Path(folder))
    uvicorn.run(create_app(engine, study, content), host="127.0.0.1", port=int(port),
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:4])
