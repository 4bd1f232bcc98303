"""Train and sample the default models, measure their quality, print the quality table, copy the
sample pictures.

    .venv/bin/python benchmarks/default_models.py [--runs vae:digits,ddpm:digits,...]
        [--m 40] [--out outputs] [--docs docs] [--table-only]

Each (model, data) row is measured on its own and cached in
`<out>/benchmarks/default_models/<model>-<data>.json`; the table (printed, and written to
`<out>/benchmarks/default_models/table.md`) is made from every cached row, so rows measured at
different times (a model written later) are merged. The quality numbers come from a `generate`
run with `--m` seeds per prompt (the data preset's prompts; 40 x 10 = 400 outputs by default, the
Fréchet distance needs a few hundred); the picture from one with the default 8 seeds.
Fit times are wall-clock on this machine (2 cores here); they vary with load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module

from influence_lab.reporting.figures import draw
from influence_lab.stages.generate import generate

DEFAULT_RUNS = "vae:digits,ddpm:digits,chargpt:names,vae:fashion,ldm:fashion,dalle:fashion"
ORDER = DEFAULT_RUNS.split(",")
TEXT_KEYS = ("novel", "in_prompt_list", "mean_length")


def generate_run(model: str, data: str, out: str, *overrides: str) -> Path:
    with initialize_config_module(config_module="influence_lab.conf", version_base="1.3"):
        cfg = compose(
            "generate",
            [
                f"model={model}",
                f"data={data}",
                f"paths.output_dir={out}",
                "logger=csv",
                "trainer.progress_bar=false",
                *overrides,
            ],
        )
    return Path(generate(cfg).path)


def measure(model: str, data: str, m: int, out: str, docs: str) -> dict:
    """One row: train (or reuse) the model, generate m outputs per prompt and read the numbers."""
    run = generate_run(model, data, out, f"generate.m={m}")
    provenance = json.loads((run / "provenance.json").read_text())
    train_dir = Path(provenance["model_dir"])
    metrics = json.loads((train_dir / "metrics.json").read_text())
    weights = torch.load(train_dir / "weights.pt", map_location="cpu", weights_only=True)
    copy_picture(generate_run(model, data, out), model, data, docs)  # 8 seeds per prompt
    return {
        "model": model,
        "data": data,
        "parameters": sum(v.numel() for v in weights.values()),
        "epochs": metrics["epochs"],
        "fit_seconds": metrics["fit_seconds"],
        "val_loss": metrics["val/loss"],
        "m": m,
        "outputs": len(provenance["prompts"]) * m,
        "quality": json.loads((run / "quality.json").read_text()),
        "train_dir": str(train_dir),
        "measured": time.strftime("%Y-%m-%d %H:%M"),
    }


def copy_picture(run: Path, model: str, data: str, docs: str) -> Path:
    """The run's picture into `docs`; images are drawn again with the current drawing code (a
    cached run keeps the picture it was first drawn with)."""
    Path(docs).mkdir(exist_ok=True)
    stem = Path(docs) / f"samples-{model}-{data}"
    if not (run / "images.npy").exists():
        return Path(shutil.copy(run / "samples.txt", f"{stem}.txt"))
    prompts = json.loads((run / "provenance.json").read_text())["prompts"]
    images = np.load(run / "images.npy")
    grid = images.reshape(len(prompts), -1, *images.shape[1:])[:20]
    title = f"{model} on {data}: {grid.shape[1]} seeds per prompt"
    return draw(grid, prompts[:20], stem, title)


def table(rows: list[dict]) -> str:
    lines = [
        "| model | data | parameters | epochs | fit (s) | held-out loss | prompt_match "
        "| Fréchet (classifier features) | other quality |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["quality"]
        match = f"{q['prompt_match']:.2f}" if "prompt_match" in q else "-"
        frechet = f"{q['frechet']:.1f}" if "frechet" in q else "-"
        if "frechet_train" in q:
            frechet += f" (real: {q['frechet_train']:.1f})"
        other = ", ".join(f"{k} {q[k]:.2f}" for k in TEXT_KEYS if k in q) or "-"
        lines.append(
            f"| {r['model']} | {r['data']} | {r['parameters']:,} | {r['epochs']} "
            f"| {r['fit_seconds']:.0f} | {r['val_loss']:.3f} | {match} | {frechet} | {other} |"
        )
    return "\n".join(lines)


def cached_rows(folder: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    known = {name: i for i, name in enumerate(ORDER)}
    name = "{model}:{data}".format
    return sorted(rows, key=lambda r: (known.get(name(**r), len(known)), name(**r)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="model:data pairs, comma-separated")
    parser.add_argument("--m", type=int, default=40, help="outputs per prompt for the numbers")
    parser.add_argument("--out", default="outputs")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--table-only", action="store_true", help="print the cached rows only")
    args = parser.parse_args()
    folder = Path(args.out) / "benchmarks" / "default_models"
    folder.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for pair in filter(None, args.runs.split(",")):
            model, data = pair.strip().split(":")
            row = measure(model, data, args.m, args.out, args.docs)
            (folder / f"{model}-{data}.json").write_text(json.dumps(row, indent=1) + "\n")
            print(table([row]), flush=True)
    text = table(cached_rows(folder))
    (folder / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
