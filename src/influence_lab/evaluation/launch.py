"""Launch the retrain jobs of a sweep as a Hydra multirun of `influence-lab retrain`, on whatever
launcher the user chose, with a progress bar of finished members."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..console import console, show_progress
from ..errors import InfluenceLabError


def installed_launchers() -> list[str]:
    """The Hydra launchers installed here (their config names)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the installed plugins, which register their configs
    return sorted(n.removesuffix(".yaml") for n in ConfigStore.instance().list("hydra/launcher"))


def check_launcher(name: str | None) -> None:
    """`counterfactual.launcher` must name a launcher installed here (a question for the machine, so
    not part of the settings' schema)."""
    if name is None:
        return
    installed = installed_launchers()
    if name not in installed:
        raise InfluenceLabError(
            f"counterfactual.launcher is '{name}'; use one of the launchers installed here: "
            f"{', '.join(installed)}."
        )


def launcher_overrides(default: str, extra: list[str]) -> list[str]:
    """The launcher the user chose on the command line (forwarded from this process's Hydra
    config), else `default`; plus any `hydra.launcher.*` settings and `--config-dir` folders
    (where a cluster's own launcher config, e.g. conf/local/hydra/launcher/cluster.yaml, lives)."""
    chosen, forwarded = default, []
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        chosen = hc.runtime.choices.get("hydra/launcher", default) or default
        forwarded = [o for o in hc.overrides.hydra if o.startswith("hydra.launcher.")]
        if chosen == "basic" and "hydra/launcher=basic" not in hc.overrides.hydra:
            chosen = default
        for source in hc.runtime.config_sources:
            if source.provider == "command-line":
                forwarded += ["--config-dir", str(source.path).removeprefix("file://")]
    except ValueError:  # not inside a Hydra app (tests, notebooks)
        pass
    return [f"hydra/launcher={chosen}", *forwarded, *extra]


def watch_members(proc: subprocess.Popen, count_done, total: int) -> None:
    """Members done / total while the multirun runs: a rich bar on a terminal; in a log (stderr not
    a terminal) one line per tenth of the members, so that CI and SLURM logs stay short."""
    if show_progress():
        with Progress(
            TextColumn("retraining"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("retrain", total=total, completed=count_done())
            while proc.poll() is None:
                bar.update(task, completed=count_done())
                time.sleep(0.5)
            bar.update(task, completed=count_done())
        return
    start, step = time.time(), max(1, total // 10)
    next_at = step
    while True:
        running = proc.poll() is None
        done = count_done()
        if done >= next_at:
            console.print(f"retraining: {done}/{total} done ({time.time() - start:.0f} s)")
            next_at = (done // step + 1) * step if done < total else total + 1
        if not running:
            return
        time.sleep(0.5)


def run_multirun(
    sweep_dir: Path, jobs: list[int], overrides: list[str], count_done, total: int, log: Path
) -> None:
    # options (`--config-dir DIR`) before every override: argparse takes the overrides as one run
    options = [
        o
        for i, o in enumerate(overrides)
        if o.startswith("--") or (i and overrides[i - 1].startswith("--"))
    ]
    cmd = [
        sys.executable,
        "-m",
        "influence_lab.cli",
        "retrain",
        "-m",
        *options,
        f"sweep_dir={sweep_dir}",
        f"job={','.join(map(str, jobs))}",
        f"hydra.sweep.dir={sweep_dir}/hydra",
        *(o for o in overrides if o not in options),
    ]
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        watch_members(proc, count_done, total)
    if proc.returncode != 0:
        tail = "".join(Path(log).read_text().splitlines(keepends=True)[-15:])
        raise InfluenceLabError(
            f"the retrain multirun failed (exit {proc.returncode}); its log is {log}:\n{tail}"
        )
