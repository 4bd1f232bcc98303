"""Fault injection: killed fits resume, corrupt files are rebuilt, NaN losses are recorded as
failures, writes are atomic, W&B failing does not stop training, concurrent jobs do not collide."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from influence_lab.stages import counterfactual as counterfactual_stage
from influence_lab.stages import train as train_stage
from influence_lab.stages.counterfactual import counterfactual
from influence_lab.stages.retrain import retrain
from influence_lab.stages.train import train
from influence_lab.store import files as store
from influence_lab.store.files import RunDir, atomic_write
from influence_lab.training import fit as fit_module
from influence_lab.training.pack import Pack
from tests.conftest import SHRINK, make_cfg, stage_error
from tests.test_sweep import SWEEP, _sorted

EXE = str(Path(sys.executable).parent / "influence-lab")


def _start(args, cwd):
    return subprocess.Popen(
        [EXE, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        start_new_session=True,
    )


def _kill(proc) -> str:
    """SIGKILL the whole process group (as a scheduler's preemption does) and return its output."""
    os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate()[0].decode()


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _in_process_multirun(monkeypatch):
    """Run a sweep's retrain jobs in this process (so monkeypatched faults reach them)."""

    def run_jobs(sweep_dir, jobs, overrides, count_done, total, log):
        for job in jobs:
            retrain(OmegaConf.create({"sweep_dir": str(sweep_dir), "job": job}))

    monkeypatch.setattr(counterfactual_stage, "run_multirun", run_jobs)


# --- a training job killed mid-fit resumes from its last checkpoint -------------------------------


@pytest.mark.slow
def test_training_killed_mid_fit_resumes_from_last_checkpoint(cfg_factory, tmp_path):
    args = [
        "train",
        "model=vae",
        "model.fit.max_epochs=150",
        "logger=none",
        "trainer.progress_bar=false",
        f"paths.output_dir={tmp_path}/killed",
    ]
    proc = _start(args, tmp_path)
    ckpts = lambda: list((tmp_path / "killed" / "train").glob("*/checkpoints/last.ckpt.sha256"))  # noqa: E731
    assert _wait_for(
        lambda: ckpts() and torch.load(ckpts()[0].with_suffix(""), weights_only=True)["epoch"] >= 1,
        proc,
    ), proc.communicate()[0].decode()[-2000:]
    _kill(proc)
    run_dir = ckpts()[0].parent.parent
    assert not (run_dir / "done").exists()
    resumed = subprocess.run(
        [EXE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epoch = int(resumed.stderr.split("resuming from")[1].split("(epoch ")[1].split(")")[0])
    assert 1 <= epoch < 150
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 150 and metrics["steps"] > 0
    # the resumed model is the model of an uninterrupted fit
    whole = train(
        cfg_factory("train", "model.fit.max_epochs=150", f"paths.output_dir={tmp_path}/whole")
    )
    a = torch.load(run_dir / "weights.pt", weights_only=True)
    b = torch.load(whole / "weights.pt", weights_only=True)
    assert whole.path.name == run_dir.name
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


# --- a sweep killed at random points, or every 20 seconds, ends with exactly the uninterrupted rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The results of the small sweep run once without interruption."""
    out = tmp_path_factory.mktemp("uninterrupted")
    run = counterfactual(make_cfg("counterfactual", out, *SWEEP))
    return _sorted(pd.read_parquet(run / "results.parquet"))


def run_with_kills(args, cwd, delays, attempts=60, started=None):
    """Run `influence-lab ARGS`; while it has not finished, SIGKILL its process group after the next
    delay of `delays` (cycling) and start it again. With `started` (a count that grows when the
    work to be interrupted has begun), each delay counts from then, not from the restart.
    Returns (number of kills, final output)."""
    kills = 0
    for attempt in range(attempts):
        before = started() if started else 0
        proc = _start(args, cwd)
        if started is not None:
            _wait_for(lambda b=before: started() > b, proc)
        try:
            out = proc.communicate(timeout=delays[attempt % len(delays)])[0].decode()
        except subprocess.TimeoutExpired:
            _kill(proc)
            kills += 1
            continue
        assert proc.returncode == 0, out[-3000:]
        return kills, out
    raise AssertionError(f"the sweep did not complete in {attempts} attempts")


def _check_same_rows(out_dir, uninterrupted):
    sweep = next((out_dir / "counterfactual").iterdir())
    table = pd.read_parquet(sweep / "results.parquet")
    assert not table.duplicated(["member_id", "target", "metric"]).any()  # no row twice
    pd.testing.assert_frame_equal(
        _sorted(table), uninterrupted, check_exact=False, rtol=1e-6, atol=1e-9
    )
    plan = json.loads((sweep / "plan.json").read_text())
    assert len(list((sweep / "results").glob("*.done"))) == len(plan["members"])


@pytest.mark.slow
def test_sweep_killed_at_random_points_gives_the_uninterrupted_rows(tmp_path, uninterrupted):
    args = [
        "counterfactual",
        f"paths.output_dir={tmp_path}/out",
        "logger=none",
        "trainer.progress_bar=false",
        *SHRINK["vae"],
        *SWEEP,
    ]
    # up to 4 kills at random times, then to the end; on an idle machine the sweep can finish before
    # the later kills, but the first two (at most 30 s, each restart paying its imports) always land
    delays = [random.Random(seed).uniform(4, 15) for seed in range(4)] + [3600]
    kills, _ = run_with_kills(args, tmp_path, delays, attempts=len(delays))
    print(f"killed {kills} times")
    assert kills >= 2
    _check_same_rows(tmp_path / "out", uninterrupted)


# the soak's sweep: one retrain job of 6 members fitted for 400 epochs, about 80 s of training on
# 2 cores here (measured: 40 s at 200 epochs), so that 20 s windows land inside it even on a machine
# a few times faster (with 3 epochs a CI machine finished the whole job before the first kill)
SOAK = [*SWEEP, "model.fit.max_epochs=400", "counterfactual.pack_size=6"]


@pytest.fixture(scope="module")
def soak_uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("soak_uninterrupted")
    run = counterfactual(make_cfg("counterfactual", out, *SOAK))
    return _sorted(pd.read_parquet(run / "results.parquet"))


@pytest.mark.slow
@pytest.mark.soak
def test_sweep_survives_being_killed_every_20_seconds(tmp_path, soak_uninterrupted):
    args = [
        "counterfactual",
        f"paths.output_dir={tmp_path}/out",
        "logger=none",
        "trainer.progress_bar=false",
        *SHRINK["vae"],
        *SOAK,
    ]

    # every 20 s of a running retrain job: a restart spends 12-19 s in the counterfactual stage and
    # the retrain process's imports before a job starts (measured on 2 cores), so 20 s from the
    # restart would never reach the training
    def jobs_started() -> int:
        logs = (tmp_path / "out").glob("counterfactual/*/retrain.log")
        return sum(log.read_text().count("retrain: job ") for log in logs)

    kills, out = run_with_kills(args, tmp_path, [20], started=jobs_started)
    print(f"killed {kills} times")
    assert kills >= 1  # 7 kills here (6 min); fewer on a faster machine
    _check_same_rows(tmp_path / "out", soak_uninterrupted)


# --- corrupt files are detected by their hash -----------------------------------------------------


def test_truncated_or_altered_checkpoint_is_discarded_not_resumed(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    fit_module.HashedCheckpointIO().save_checkpoint(
        {"epoch": 2, "state_dict": {"w": torch.ones(3)}}, last
    )
    assert fit_module.resume_point(tmp_path, "job") == str(last)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # truncated, as by a kill during a copy
    with pytest.warns(UserWarning, match="does not match its recorded SHA-256"):
        assert fit_module.resume_point(tmp_path, "job") is None
    assert not last.exists()
    fit_module.HashedCheckpointIO().save_checkpoint({"epoch": 2}, last)
    (tmp_path / "checkpoints" / "last.ckpt.sha256").write_text("0" * 64)  # altered
    with pytest.raises(Exception, match="does not match its recorded SHA-256"):
        fit_module.HashedCheckpointIO().load_checkpoint(last)


@pytest.mark.slow
def test_altered_result_files_are_rebuilt(cfg_factory, tmp_path, capsys):
    """Weights, embedding cache and faiss index altered after being written: the next run that
    needs them notices the hash mismatch and rebuilds them (same bytes as before)."""
    from influence_lab.stages.attribute import attribute

    cfg = cfg_factory(
        "attribute",
        "model.fit.max_epochs=1",
        "embedders.autoencoder.epochs=1",
        "generate.m=1",
        "generate.prompts=[digit zero]",
        "attribution.methods=[raw_only,fused]",
    )
    attribute(cfg)
    weights = next((tmp_path / "train").glob("vae-digits-*/weights.pt"))
    index = next((tmp_path / "embeddings").glob("model-*/index.faiss"))
    emb = next((tmp_path / "embeddings").glob("autoencoder-*/embeddings.npy"))
    originals = {p: p.read_bytes() for p in (weights, index, emb)}
    state = torch.load(weights, weights_only=True)
    weights.write_bytes(originals[weights][:100])  # truncated
    index.write_bytes(originals[index][:-8] + b"\0" * 8)  # altered, same size
    np.save(emb, np.zeros((2, 2), dtype=np.float32))  # replaced
    capsys.readouterr()
    attribute(OmegaConf.merge(cfg, {"force": True}))
    err = "".join(capsys.readouterr().err.split())  # the console wraps long paths
    for path in (weights, index, emb):
        assert f"{path}changedafteritwaswritten" in err
    assert index.read_bytes() == originals[index] and emb.read_bytes() == originals[emb]
    rebuilt = torch.load(
        weights, weights_only=True
    )  # (torch.save names its archive after the temp file)
    assert all(torch.equal(rebuilt[k], state[k]) for k in state)
    assert RunDir(tmp_path, "train", "x", "y").done is False


def test_load_model_refuses_altered_weights(cfg_factory, tmp_path):
    from influence_lab.models.build import load_model

    run = train(cfg_factory("train", "model.fit.max_epochs=1"))
    load_model(run.path)
    state = torch.load(run / "weights.pt", weights_only=True)
    state[next(iter(state))] += 1.0
    torch.save(state, run / "weights.pt")
    with pytest.raises(Exception, match="weights.pt does not match the SHA-256 recorded"):
        load_model(run.path)


# --- NaN / infinite losses ------------------------------------------------------------------------


def test_nan_loss_stops_a_training_job_with_its_name(cfg_factory, tmp_path, capsys, monkeypatch):
    from influence_lab.models.vae import VAE

    original = VAE.loss
    monkeypatch.setattr(
        VAE, "loss", lambda self, batch, noise: original(self, batch, noise) * float("nan")
    )
    cfg = cfg_factory("train", "model.fit.max_epochs=2")
    err = stage_error(train_stage, cfg, capsys)
    assert (
        "error: training vae-digits-" in err
        and "stopped: the loss is nan at epoch 0, batch 0" in err
    )
    assert not list(tmp_path.rglob("done"))


@pytest.mark.slow
def test_nan_member_is_recorded_as_a_failure_and_the_sweep_goes_on(
    cfg_factory, tmp_path, monkeypatch
):
    _in_process_multirun(monkeypatch)
    original = Pack._losses
    poisoned = []

    def losses(self, batch, noise, weight):
        out = original(self, batch, noise, weight)
        if not poisoned:  # the first pack's first member diverges at its third step
            poisoned.append(id(self))
        if id(self) == poisoned[0] and int(self.member_steps[0]) >= 2:
            out = out.clone()
            out[0] = float("inf")
        return out

    monkeypatch.setattr(Pack, "_losses", losses)
    run = counterfactual(cfg_factory("counterfactual", *SWEEP))
    plan = json.loads((run / "plan.json").read_text())
    first = plan["jobs"][0][0]
    failure = json.loads((run / "results" / f"{first}.failed").read_text())
    assert failure["member_id"] == first and failure["job"] == 0
    assert failure["error"].startswith(
        f"retrain job 0: member {first} stopped: its training loss became inf"
    )
    assert "at epoch 0, step 2" in failure["error"]
    table = pd.read_parquet(run / "results.parquet")
    assert first not in set(table.member_id)
    assert set(table.member_id) == {m["member_id"] for m in plan["members"]} - {first}
    assert np.isfinite(table.value).all()
    failures = pd.read_csv(run / "failures.csv")
    assert list(failures.member_id) == [first]
    assert "## Failed members" in (run / "summary.md").read_text()
    assert json.loads((run / "done").read_text())["failed"] == 1


# --- writes are atomic; a write failure is a clear error ------------------------------------------


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temp_file(tmp_path):
    target = tmp_path / "results.parquet"
    target.write_text("old complete result")

    def half_then_fail(path):
        path.write_text("half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old complete result"
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]


def test_an_unwritable_output_dir_is_a_clear_error(cfg_factory, tmp_path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should be")
    err = stage_error(train_stage, cfg_factory("train", f"paths.output_dir={blocker}/out"), capsys)
    assert "error: cannot" in err and "not-a-dir/out" in err and "paths.output_dir" in err
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(SystemExit):
            train_stage.run(cfg_factory("train", f"paths.output_dir={ro}"))
        assert "error: cannot" in capsys.readouterr().err


# --- W&B unavailable ------------------------------------------------------------------------------


def test_wandb_failing_at_init_falls_back_to_csv_with_one_warning(
    cfg_factory, tmp_path, monkeypatch
):
    from pytorch_lightning import loggers

    class Broken(loggers.WandbLogger):
        @property
        def experiment(self):
            raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(loggers, "WandbLogger", Broken)  # read when a tracked run starts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(cfg_factory("train", "logger=wandb", "model.fit.max_epochs=2"))
    mine = [w for w in caught if "W&B could not start" in str(w.message)]
    assert len(mine) == 1 and "api.wandb.ai unreachable" in str(mine[0].message)
    assert run.done
    csv = pd.read_csv(run / "csv" / "metrics.csv")
    assert csv["train/loss"].notna().sum() == 2


# --- concurrency ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_never_run_the_same_retrain_job(cfg_factory, tmp_path, monkeypatch):
    """Plan a sweep (no retraining), then start the same retrain job twice at once: one trains,
    the other waits for it and finds every member done; then two whole sweeps at once."""
    monkeypatch.setattr(counterfactual_stage, "run_multirun", lambda *a, **k: None)
    with pytest.raises(Exception, match="have no results"):
        counterfactual(cfg_factory("counterfactual", *SWEEP))
    sweep = next((tmp_path / "counterfactual").iterdir())
    plan = json.loads((sweep / "plan.json").read_text())
    procs = [_start(["retrain", f"sweep_dir={sweep}", "job=0"], tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    joined = [" ".join(o.split()) for o in outs]
    assert sum("members as one pack" in o for o in joined) == 1
    assert sum("retrain job 0: every member is already done" in o for o in joined) == 1
    assert sorted(p.name for p in (sweep / "results").glob("*.done")) == sorted(
        f"{m}.done" for m in plan["jobs"][0]
    )

    # two whole sweeps on one output directory at once: one runs the jobs, the other reuses
    args = [
        "counterfactual",
        f"paths.output_dir={tmp_path}/both",
        "logger=none",
        "trainer.progress_bar=false",
        *SHRINK["vae"],
        *SWEEP,
    ]
    procs = [_start(args, tmp_path) for _ in range(2)]
    outs = [" ".join(p.communicate(timeout=900)[0].decode().split()) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("reusing counterfactual result" in o for o in outs) == 1
    both = next((tmp_path / "both" / "counterfactual").iterdir())
    launches = [
        line for line in (both / "retrain.log").read_text().splitlines() if line.startswith("$ ")
    ]
    assert len(launches) == 1
    assert sum(o.count("training vae on digits") for o in outs) == 1  # the full model: trained once
    table = pd.read_parquet(both / "results.parquet")
    assert not table.duplicated(["member_id", "target", "metric"]).any()


def test_claims_are_exclusive_and_die_with_their_process(tmp_path):
    lock = tmp_path / "job.lock"
    code = (
        f"from influence_lab.store.files import claim\nimport time\n"
        f"with claim({str(lock)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert holder.stdout.readline().strip() == b"held"
    from filelock import FileLock, Timeout

    with pytest.raises(Timeout):
        FileLock(str(lock)).acquire(timeout=0.5)
    os.killpg(holder.pid, signal.SIGKILL)  # killed while holding: the claim goes with it
    holder.wait()
    start = time.time()
    with store.claim(lock):
        assert time.time() - start < 5


def test_a_slow_checkpoint_is_written_less_often(tmp_path):
    """LastCheckpoint keeps saving at most 5% of the fit's time: a save that takes 0.1 s makes the
    next one wait 1.9 s even with checkpoint_every_s=0; the last epoch is always saved."""
    import time
    from types import SimpleNamespace

    from influence_lab.training.fit import LastCheckpoint

    saves = []

    def save(path):
        saves.append(time.monotonic())
        time.sleep(0.1)

    callback = LastCheckpoint(tmp_path, every_s=0)
    trainer = SimpleNamespace(current_epoch=0, max_epochs=100, save_checkpoint=save)
    for epoch in range(20):  # 20 epochs of 0.05 s: one save, then none for 1.9 s
        trainer.current_epoch = epoch
        callback.on_train_epoch_end(trainer, None)
        time.sleep(0.05)
    assert len(saves) == 1 and callback.wait_s == pytest.approx(1.9, abs=0.3)
    trainer.current_epoch = 99  # the last epoch
    callback.on_train_epoch_end(trainer, None)
    assert len(saves) == 2
