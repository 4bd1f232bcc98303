"""The configs live in the top-level conf/ and still reach an installed influence-lab: a wheel built
from the checkout, installed into a fresh venv outside it, composes and trains from another folder;
a user's own config folder joins with --config-dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_every_config_group():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.relative_to(ROOT / "src").parent.parts)
        for p in (ROOT / "src").rglob("__init__.py")
    }
    groups = {
        p.name
        for p in (ROOT / "conf").iterdir()
        if p.is_dir() and p.name not in ("local", "__pycache__")
    }
    data_folders = {f"influence_lab.conf.{g}" for g in groups} | {
        "influence_lab.reporting.templates",
        "influence_lab.reviewing.templates",
    }
    assert set(project["packages"]) == found | {"influence_lab.conf"} | data_folders
    assert project["package-dir"]["influence_lab.conf"] == "conf"
    data = project["package-data"]
    assert data["influence_lab.conf"] == ["*.yaml"]
    assert all(data[f"influence_lab.conf.{g}"] == ["*.yaml"] for g in groups)
    assert data["influence_lab.reporting.templates"] == ["*.j2"]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A wheel of the checkout in a fresh venv whose only other packages are the dev venv's
    site-packages (added by a .pth file, so the editable install's finder is not loaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # a machine-local config must never be packaged
    local = ROOT / "conf" / "local" / "never_packaged.yaml"
    made_local = not local.exists()
    local.parent.mkdir(parents=True, exist_ok=True)
    if made_local:
        local.write_text("x: 1\n")
    try:
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-v",  # the build backend's warnings are shown (and checked) only verbose
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(tmp / "dist"),
                str(ROOT),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if made_local:
            local.unlink()
    wheel = next((tmp / "dist").glob("influence_lab-*.whl"))
    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    site = next((venv / "lib").glob("python*/site-packages"))
    dev_site = next(
        p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir()
    )
    (site / "dev_packages.pth").write_text(f"{dev_site}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return wheel, venv, built.stdout + built.stderr


def test_building_the_wheel_warns_of_no_undeclared_package(wheel_venv):
    _, _, log = wheel_venv
    assert "influence_lab" in log  # the verbose build log was captured
    assert "would be ignored" not in log
    assert "is absent from the `packages` configuration" not in log


def test_wheel_carries_the_configs_but_not_conf_local(wheel_venv):
    wheel, _, _ = wheel_venv
    names = zipfile.ZipFile(wheel).namelist()
    assert "influence_lab/conf/train.yaml" in names
    assert "influence_lab/conf/model/ddpm.yaml" in names
    assert "influence_lab/conf/experiment/paper_unlearning.yaml" in names
    assert not [n for n in names if "/local/" in n]
    shipped = {
        n.removeprefix("influence_lab/conf/") for n in names if n.startswith("influence_lab/conf/")
    }
    in_repo = {
        p.relative_to(ROOT / "conf").as_posix()
        for p in (ROOT / "conf").rglob("*")
        if p.is_file() and "local" not in p.parts and "__pycache__" not in p.parts
    }
    assert shipped == in_repo


def run_in(work: Path, env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`args` run in the folder `work` with the environment `env`, their output captured as text."""
    return subprocess.run(
        list(args), cwd=work, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_installed_wheel_composes_and_trains_from_another_folder(wheel_venv, tmp_path):
    _, venv, _ = wheel_venv
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": ""}
    work = tmp_path / "elsewhere"
    work.mkdir()
    exe = str(venv / "bin" / "influence-lab")
    python = str(venv / "bin" / "python")
    job = run_in(work, env, exe, "train", "--cfg", "job")
    assert job.returncode == 0, job.stderr
    assert "name: vae" in job.stdout and "stage: train" in job.stdout
    help_text = run_in(work, env, exe, "train", "--help").stdout
    assert help_text.startswith("influence-lab is powered by Hydra.")
    # the child jobs of a sweep start as `python -m influence_lab.cli`: they find the configs too
    child = run_in(
        work, env, python, "-m", "influence_lab.cli", "retrain", "--cfg", "job", "sweep_dir=x"
    )
    assert child.returncode == 0, child.stderr
    assert "sweep_dir: x" in child.stdout
    # the package imported is the wheel's, not the checkout's
    where = run_in(
        work, env, python, "-c", "import influence_lab; print(influence_lab.__file__)", timeout=120
    ).stdout
    assert str(venv) in where and str(ROOT) not in where
    fit = run_in(
        work,
        env,
        exe,
        "train",
        "model.fit.max_epochs=2",
        "logger=none",
        "trainer.progress_bar=false",
        "paths.output_dir=out",
        timeout=600,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = list((work / "out" / "train").glob("vae-digits-*"))
    assert len(runs) == 1 and (runs[0] / "done").is_file() and (runs[0] / "weights.pt").is_file()


def test_a_users_config_folder_joins_with_config_dir(tmp_path):
    """A model preset in the user's own folder is chosen like a built-in one (and the built-in
    groups are still there)."""
    mine = tmp_path / "myconf" / "model"
    mine.mkdir(parents=True)
    (mine / "tiny_vae.yaml").write_text(
        "defaults:\n  - vae\n  - _self_\nhidden: 24\nlatent_dim: 4\n"
    )
    for flag in (
        ["--config-dir", str(tmp_path / "myconf")],
        [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"],
    ):
        out = run_cli("train", *flag, "model=tiny_vae", "--cfg", "job", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        model = out.stdout.split("\nmodel:\n", 1)[1]
        assert re.search(r"^  hidden: 24$", model, re.M) and re.search(
            r"^  latent_dim: 4$", model, re.M
        )
        assert re.search(r"^  name: vae$", model, re.M)
