"""Each bad input gets one clear sentence naming the setting, a non-zero exit, no `done` marker."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from influence_lab.stages import generate as generate_stage
from influence_lab.stages import train as train_stage


def _folder(tmp_path, n, captions):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(folder / f"x{i}.png")
        if captions:
            (folder / f"x{i}.txt").write_text("a grey square")
    return folder


CASES = {
    "missing image folder": (lambda tmp: ["data=imagefolder", f"data.source.path={tmp}/nowhere", "data.prompts=[a]"],
                             "data.source.path '.*nowhere' is not a directory"),
    "empty image folder": (lambda tmp: ["data=imagefolder", f"data.source.path={_folder(tmp, 0, True)}", "data.prompts=[a]"],
                           "data.source.path '.*imgs' holds no images"),
    "image without caption": (lambda tmp: ["data=imagefolder", f"data.source.path={_folder(tmp, 2, False)}", "data.prompts=[a]"],
                              "image .*x0.png has no caption file x0.txt"),
    "unknown id to exclude": (lambda tmp: ["data.exclude_ids=[digit-9999]"],
                              r"data.exclude_ids names 1 id\(s\) not in the dataset \(digit-9999\)"),
    "removal that empties the dataset": (lambda tmp: ["data=imagefolder", f"data.source.path={_folder(tmp, 3, True)}",
                                                      "data.prompts=[a]", "data.split.val_fraction=0",
                                                      "data.exclude_ids=[x0,x1,x2]"],
                                         "data.exclude_ids removes all 3 training items"),
    "unknown model architecture": (lambda tmp: ["model.arch=transformer"],
                                   "model.arch is 'transformer'; allowed values are 'mlp' and 'conv'"),
    "image model on text data": (lambda tmp: ["data=names"], "model=vae needs image data but data=names holds text"),
    "unknown logger": (lambda tmp: ["logger.name=tensorboard"], "logger is 'tensorboard'; allowed values are wandb, csv, none"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("stage", ["train", "generate"])
def test_bad_input_message_exit_and_no_done_marker(case, stage, cfg_factory, tmp_path, capsys):
    overrides, message = CASES[case]
    cfg = cfg_factory(stage, *overrides(tmp_path))
    module = train_stage if stage == "train" else generate_stage
    with pytest.raises(SystemExit) as exit_info:
        module.run(cfg)
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ")
    import re

    assert re.search(message, err), err
    assert not list(Path(tmp_path).rglob("done"))


def _cli(*args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    exe = Path(sys.executable).parent / "influence-lab"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_unknown_source_model_and_stage_from_the_cli(tmp_path):
    out = _cli("train", "data=mnist", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode != 0
    assert "Could not find 'data/mnist'" in out.stderr
    assert "digits" in out.stderr and "names" in out.stderr and "imagefolder" in out.stderr
    out = _cli("generate", "model=gan", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode != 0 and "Could not find 'model/gan'" in out.stderr
    assert "chargpt" in out.stderr and "ddpm" in out.stderr and "vae" in out.stderr
    out = _cli("trian", cwd=tmp_path)
    assert out.returncode == 2 and "unknown stage 'trian'; stages are train, generate" in out.stderr
    out = _cli("--help", cwd=tmp_path)
    assert out.returncode == 0 and "train " in out.stdout and "generate " in out.stdout
    assert not list(Path(tmp_path).rglob("done"))
