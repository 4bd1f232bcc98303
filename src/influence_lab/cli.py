"""`influence-lab STAGE [hydra overrides] [-m]`: each stage is a Hydra app with its own primary
config `<stage>.yaml` in the top-level conf/, installed as the package `influence_lab.conf` (so
an editable install and a wheel find it alike). A user's own config folder joins the search path
with `--config-dir DIR` (or `hydra.searchpath=[file://DIR]`)."""

from __future__ import annotations

import importlib
import sys
import time

from .stages import STAGES

CONFIG_PATH = "pkg://influence_lab.conf"
APP = "influence-lab"
USAGE = "usage: influence-lab STAGE [key=value ...] [-m]"


def stage_help() -> str:
    lines = [USAGE, "", "Stages:"]
    for name, text in STAGES.items():
        lines.append(f"  {name:<14} {text}")
    lines += [
        "",
        "Each stage is a Hydra app: `influence-lab STAGE --help` shows its config and groups,",
        "`influence-lab STAGE --cfg job` prints the resolved config, `-m` runs a multirun sweep.",
        "Outputs go under paths.output_dir (default: outputs/).",
    ]
    return "\n".join(lines)


# flags with which Hydra only prints (help, config) and creates no directory
PRINT_ONLY = (
    "-h",
    "--help",
    "--hydra-help",
    "-c",
    "--cfg",
    "-i",
    "--info",
    "-sc",
    "--shell-completion",
)


def output_dir_arg(argv: list[str]) -> str | None:
    """`paths.output_dir` as the command line sets it: the override, or the default (outputs) when
    no `paths=` group is chosen; None when it cannot be told from the command line."""
    value = None if any(a.lstrip("+").startswith("paths=") for a in argv) else "outputs"
    for arg in argv:
        key, sep, val = arg.lstrip("+").partition("=")
        if sep and key == "paths.output_dir":
            value = val.strip("'\"")
    return value


def check_output_dir_arg(argv: list[str]) -> None:
    """Hydra creates its run directory under paths.output_dir before any stage runs, so a file in
    the way is refused here, with the one sentence the stages give (and exit status 2)."""
    value = output_dir_arg(argv)
    if value is None or any(a in PRINT_ONLY for a in argv):
        return
    from .errors import InfluenceLabError
    from .store.paths import check_output_dir

    try:
        check_output_dir(value)
    except InfluenceLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def first_line(stage: str, cfg, started: float) -> str:
    """What a stage is about to do, in one line, printed before torch and the stage's other heavy
    modules are imported (seconds since the process started its `main`)."""
    from omegaconf import OmegaConf

    def value(key: str):
        try:
            return OmegaConf.select(cfg, key, default=None)
        except Exception:  # an interpolation that fails is reported by the stage itself
            return None

    model, data = value("model.name"), value("data.name")
    what = f"{model} on {data}" if model and data else stage
    if stage == "retrain":
        what = f"job {value('job')} of {value('sweep_dir')}"
    return f"{stage}: {what} (config read in {time.perf_counter() - started:.1f} s; loading)"


def run_stage(stage: str, argv: list[str], started: float | None = None) -> None:
    """Compose the stage's config with Hydra, print the first line, then import the stage (torch,
    Lightning, datasets, ...) and run it. `STAGE --help` and `--cfg job` never import the stage."""
    started = time.perf_counter() if started is None else started
    check_output_dir_arg(argv)
    import hydra

    # Hydra names the app after argv[0] in `--help` ("== influence-lab ==") and its job
    sys.argv = [APP, *argv]

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=stage)
    def app(cfg):
        print(first_line(stage, cfg, started), file=sys.stderr, flush=True)
        module = importlib.import_module(f"influence_lab.stages.{stage}")
        return module.run(cfg)

    app()


def review_overrides(argv: list[str]) -> list[str]:
    """`review ACTION [NAME] [overrides]` as Hydra overrides: `review invite Ada seed=1` ->
    `review.action=invite review.reviewer='Ada' seed=1` (a bare override list passes as is)."""
    from .settings.review_settings import REVIEW_ACTIONS

    if not argv or argv[0] not in REVIEW_ACTIONS:
        return argv
    action, rest = argv[0], argv[1:]
    out = [f"review.action={action}"]
    if action == "invite":
        if not rest or "=" in rest[0] or rest[0].startswith(("-", "+")):
            print("error: review invite needs a name: influence-lab review invite NAME.",
                  file=sys.stderr)  # fmt: skip
            sys.exit(2)
        name = rest.pop(0).replace("'", "\\'")  # Hydra's quoted string; names hold no backslash
        out.append(f"review.reviewer='{name}'")
    return out + rest


def main() -> None:
    started = time.perf_counter()
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(stage_help())
        return
    stage = argv[0]
    if stage not in STAGES:
        print(f"error: unknown stage '{stage}'; stages are {', '.join(STAGES)}.", file=sys.stderr)
        sys.exit(2)
    rest = review_overrides(argv[1:]) if stage == "review" else argv[1:]
    run_stage(stage, rest, started)


if __name__ == "__main__":
    main()
