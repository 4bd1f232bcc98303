"""`influence-lab STAGE [hydra overrides] [-m]`: each stage is a Hydra app with its own primary
config in `influence_lab/conf/<stage>.yaml`."""

from __future__ import annotations

import importlib
import sys

import hydra

from .stages import STAGES

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


def run_stage(stage: str, argv: list[str]) -> None:
    module = importlib.import_module(f"influence_lab.stages.{stage}")
    sys.argv = [f"influence-lab {stage}", *argv]

    @hydra.main(version_base="1.3", config_path="conf", config_name=stage)
    def app(cfg):
        return module.run(cfg)

    app()


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(stage_help())
        return
    stage = argv[0]
    if stage not in STAGES:
        print(f"error: unknown stage '{stage}'; stages are {', '.join(STAGES)}.", file=sys.stderr)
        sys.exit(2)
    run_stage(stage, argv[1:])


if __name__ == "__main__":
    main()
