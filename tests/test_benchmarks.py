"""The benchmarks run (tiny), so they do not rot between the runs that fill the docs' tables."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pack_step_benchmark_compares_its_variants_on_the_same_batches():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.pack_step", "--models", "vae", "--members", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| vae")]
    assert [r[1].strip() for r in rows] == ["before", "vmapped", "after"]
    for r in ([float(c) for c in r[2:8]] for r in rows):  # the parts add up to the step
        assert abs(sum(r[:4]) - r[4]) < 0.3 and r[5] > 0
    # the same batches and noise: the variants train alike
    losses = [float(r[-1]) for r in rows]
    assert max(losses) - min(losses) <= 1e-3 * abs(losses[0])
    gap = float(out.stdout.split("parameters differ by ")[1].split()[0])
    assert gap < 1e-2


def test_projection_benchmark_draws_ahead_to_the_same_numbers():
    args = ["--params", "20000", "--dim", "256", "--rows", "16", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.projection", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 20,000"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[1] == "16" and float(cells[2]) > 0 and float(cells[3]) > 0
    assert cells[-1] == "True"  # drawing ahead on threads gives the one-thread numbers
