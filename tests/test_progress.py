"""One progress system: rich bars on a terminal only; logs (CI, SLURM, pipes) get no bars, no
per-run W&B warning and no faiss loader chatter, and a retrain multirun reports members done /
total in a few lines."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from influence_lab.evaluation.launch import watch_members

NOISE = ("it/s", "%|", "━", "anonymous", "faiss.loader", "wandb: WARNING")


@pytest.mark.slow
def test_a_stage_writes_no_progress_noise_into_a_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["WANDB_MODE"] = "offline"
    exe = Path(sys.executable).parent / "influence-lab"
    out = subprocess.run(
        [
            str(exe),
            "attribute",
            f"paths.output_dir={tmp_path}",
            "logger=wandb",  # W&B offline: its run starts, its warnings would show
            "model.fit.max_epochs=2",
            "generate.m=2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert "attributed" in log and "trained" in log  # the stage's own lines are there
    assert list(tmp_path.glob("wandb/offline-run-*"))  # W&B did run
    for noise in NOISE:
        assert noise not in log, f"{noise!r} in the log:\n{log[-3000:]}"


def test_a_multirun_in_a_log_reports_members_done_in_tenths(capsys):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    start = time.time()
    watch_members(proc, lambda: min(40, int((time.time() - start) * 20)), 40)  # 40 in 2 s
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert 4 <= len(lines) <= 11, lines
    assert all(ln.startswith("retraining: ") for ln in lines)
    assert lines[-1].startswith("retraining: 40/40 done")
    done = [int(ln.split()[1].split("/")[0]) for ln in lines]
    assert done == sorted(done) and len(set(done)) == len(done)


def test_long_loops_in_a_log_report_tenths(capsys):
    """The search over prompts and the streamed scoring over feature blocks: in a log, one line
    per tenth (done / total), and nothing of a bar."""
    import numpy as np

    from influence_lab.attribution.feature_store import Features
    from influence_lab.attribution.topk import top_scores_of
    from influence_lab.console import track

    assert list(track(range(40), "search", log_tenths=True)) == list(range(40))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert [ln.split(" (")[0] for ln in lines] == [f"search: {4 * i}/40" for i in range(1, 11)]
    assert list(track(range(40), "quiet")) == list(range(40))  # no log_tenths: nothing
    assert capsys.readouterr().err == ""
    phi = np.ones((25, 4), dtype=np.float32)
    top = top_scores_of([(np.ones((3, 4)), Features([phi[:10], phi[10:]]))], 5, desc="scores (x)")
    assert top.indices.shape == (3, 5)
    lines = capsys.readouterr().err.split()
    # blocks of 8,192 rows: one per shard here, so two lines
    assert " ".join(lines).count("scores (x): ") == 2 and "scores (x): 2/2" in " ".join(lines)
