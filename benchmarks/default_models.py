"""Train and sample the three default models, print the README's quality table, copy the pictures.

    .venv/bin/python benchmarks/default_models.py [--out outputs] [--docs docs]

Fit times are wall-clock on this machine (2 cores here); they vary with load.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hydra import compose, initialize_config_module

from influence_lab.stages.generate import generate

RUNS = [("vae", "digits"), ("ddpm", "digits"), ("chargpt", "names")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="outputs")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    rows = []
    for model, data in RUNS:
        with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
            cfg = compose(
                "generate",
                [
                    f"model={model}",
                    f"data={data}",
                    f"paths.output_dir={args.out}",
                    "logger=csv",
                    "trainer.progress_bar=false",
                ],
            )
        run = generate(cfg)
        provenance = json.loads((run / "provenance.json").read_text())
        train_dir = Path(provenance["model_dir"])
        metrics = json.loads((train_dir / "metrics.json").read_text())
        quality = json.loads((run / "quality.json").read_text())
        n_params = sum(
            v.numel()
            for v in __import__("torch").load(train_dir / "weights.pt", weights_only=True).values()
        )
        picture = next(p for p in (run / "grid.png", run / "samples.txt") if p.exists())
        Path(args.docs).mkdir(exist_ok=True)
        shutil.copy(picture, Path(args.docs) / f"samples-{model}-{data}{picture.suffix}")
        rows.append(
            (
                model,
                data,
                n_params,
                metrics["epochs"],
                metrics["fit_seconds"],
                metrics["val/loss"],
                ", ".join(f"{k} {v:.2f}" for k, v in quality.items()),
            )
        )
    print("| model | data | parameters | epochs | fit (s) | held-out loss | generation quality |")
    print("|---|---|---|---|---|---|---|")
    for model, data, n, epochs, secs, loss, q in rows:
        print(f"| {model} | {data} | {n:,} | {epochs} | {secs:.0f} | {loss:.3f} | {q} |")


if __name__ == "__main__":
    main()
