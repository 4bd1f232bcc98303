"""A counterfactual sweep on a real local SLURM cluster (`make slurm-up`) gives the same results as
the basic launcher. Skipped when no cluster answers, unless REQUIRE_SLURM=1."""

import os
import shutil
import subprocess

import pandas as pd
import pytest

from influence_lab.stages.counterfactual import counterfactual
from tests.test_sweep import SWEEP, _sorted


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


@pytest.mark.slurm
def test_slurm_sweep_equals_basic_launcher(cfg_factory, tmp_path):
    if not cluster_up():
        if os.environ.get("REQUIRE_SLURM") == "1":
            pytest.fail("REQUIRE_SLURM=1 but no SLURM cluster answers (run `make slurm-up`, export SLURM_CONF)")
        pytest.skip("no SLURM cluster (make slurm-up)")
    basic = counterfactual(cfg_factory("counterfactual", *SWEEP, f"paths.output_dir={tmp_path}/basic"))
    slurm = counterfactual(cfg_factory(
        "counterfactual", *SWEEP, f"paths.output_dir={tmp_path}/slurm", "counterfactual.launcher=submitit_slurm",
        "counterfactual.launcher_overrides=['hydra.launcher.partition=debug','hydra.launcher.timeout_min=20',"
        "'hydra.launcher.cpus_per_task=1','hydra.launcher.array_parallelism=2']"))
    log = (slurm / "retrain.log").read_text()
    assert "hydra/launcher=submitit_slurm" in log
    assert list((slurm.path / "hydra").rglob("*_submitted.pkl")) or list((slurm.path / "hydra").rglob(".submitit"))
    a = _sorted(pd.read_parquet(basic / "results.parquet"))
    b = _sorted(pd.read_parquet(slurm / "results.parquet"))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)
