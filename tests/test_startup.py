"""Start-up: `influence-lab --help` and `STAGE --help` import none of the heavy libraries, and a
stage prints its first line before it imports torch. No wall-clock bound is asserted (a loaded
machine would make it flaky); the measured times are printed (`pytest -s`) and kept in
docs/performance.md."""

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli

HEAVY = [
    "torch",
    "lightning",
    "pytorch_lightning",
    "wandb",
    "datasets",
    "faiss",
    "matplotlib",
    "sklearn",
    "scipy",
    "pandas",
    "numpy",
]

# runs the CLI's main in this interpreter, then lists the heavy modules it imported
PROBE = """
import json, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["influence-lab", *json.loads(sys.argv[1])]
from influence_lab.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)), file=sys.stderr)
"""


def imported(args: list[str], cwd) -> list[str]:
    """The heavy modules `influence-lab ARGS` imports (its last line of stderr)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    print(f"influence-lab {' '.join(args)}: {time.perf_counter() - start:.2f} s")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stderr.strip().splitlines()[-1])


def test_help_imports_nothing_heavy(tmp_path):
    assert imported(["--help"], tmp_path) == []
    assert imported(["train", "--help"], tmp_path) == []
    assert imported(["lds", "--cfg", "job"], tmp_path) == []
    start = time.perf_counter()
    out = run_cli("--help", cwd=tmp_path)
    print(f"influence-lab --help (console script): {time.perf_counter() - start:.2f} s")
    assert out.returncode == 0 and "Stages:" in out.stdout


def test_a_stage_says_what_it_does_before_importing_torch(tmp_path):
    """With torch made unimportable, `train` still prints its first line (then fails at the
    import): the line comes before torch, Lightning and datasets are loaded."""
    code = (
        "import sys; sys.modules['torch'] = None; "
        "sys.argv = ['influence-lab', *sys.argv[1:]]; "
        "from influence_lab.cli import main; main()"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "model=vae",
            "data=digits",
            f"paths.output_dir={tmp_path}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    first = out.stderr.splitlines()[0]
    assert first.startswith("train: vae on digits (config read in "), out.stderr
    assert out.returncode != 0 and "torch" in out.stderr
    assert not list(Path(tmp_path).rglob("done"))


def test_stages_import_faiss_and_wandb_only_where_used(tmp_path):
    """Importing the stages (as `influence-lab STAGE` does) loads neither faiss (a search builds
    its index) nor wandb (a run with logger=wandb starts it)."""
    code = (
        "import json, sys\n"
        "from influence_lab.stages import STAGES\n"
        "for stage in STAGES:\n"
        "    __import__(f'influence_lab.stages.{stage}')\n"
        "print(json.dumps(sorted(m for m in ('faiss', 'wandb') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
