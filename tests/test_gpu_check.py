"""scripts/gpu-check.sh --cpu: the GPU check's steps, tiny, on the CPU, so that the script run on
a GPU machine cannot rot."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu():
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh", "--cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.search(r"float32 matmul peak here: \d+ GFLOP/s", out)
    for model in ("vae", "ddpm"):  # a table row with the packed rate and both ratios
        row = re.search(
            rf"^\| {model} \| \d+ \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+)x",
            out,
            re.M,
        )
        assert row, out[-3000:]
        assert float(row.group(3)) > 0 and float(row.group(5)) > 0
        # and the same run's ratios against the targets, each said met or not met
        line = re.search(rf"^{model}: c/b ([\d.]+)x \(target >= 9x, (not )?met\)", out, re.M)
        assert line and float(line.group(1)) == float(row.group(5)), out[-3000:]
        assert (float(line.group(1)) >= 9) == (line.group(2) is None)
    assert re.search(r"gpu-check: DDPM fit took \d+ s wall", out)
    # TRAK's sharded features of the fashion (or digits) VAE, then its scores
    rows = re.search(
        r"featurise trak: every shard of (\d+) \((\d+) items\), 1 model\(s\), (\d+) feature rows",
        out,
    )
    assert rows and int(rows.group(1)) > 1 and rows.group(2) == rows.group(3), out[-3000:]
    assert re.search(
        r"gpu-check: attribute \(kernel, query gradients, streamed top-k\) took \d+ s", out
    )
    assert done.stdout.rstrip().endswith("gpu-check: done")


def test_the_gpu_check_refuses_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    done = subprocess.run(
        ["bash", "scripts/gpu-check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())},
    )  # fmt: skip
    assert done.returncode != 0 and "no CUDA GPU here" in done.stderr
