"""Each bad input gets one clear sentence naming the setting, exit status 2 and no `done` marker.

ROWS is the "Bad input" table of docs/bad-input.md, row by row:
`test_catalogue_lists_every_row_and_only_these` checks that the page holds exactly these rows, and
every row is run here (or, where `tested_in` names another test file, that file checks its
message). A row's message is the page's text; `...` stands for the parts that vary (paths,
sizes)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from influence_lab.data.dataset import split_indices
from influence_lab.stages import STAGES as STAGE_HELP
from tests.conftest import make_cfg, run_cli, stage_error

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "bad-input.md"  # the documentation's "Bad input" page
STAGES = {name: importlib.import_module(f"influence_lab.stages.{name}") for name in STAGE_HELP}


class Row(NamedTuple):
    input: str  # the README's first column
    message: str  # the sentence after `error: `, as the README shows it
    overrides: object = ()  # a list, or a function of the test's tmp_path giving one
    stages: tuple = ("train",)  # each is run with the overrides
    model: str = "vae"
    shrink: bool = True
    tested_in: str = (
        ""  # another test file that checks this row (its message must contain `evidence`)
    )
    evidence: str = ""
    cell: str = ""  # the README's second column, when it is not just the message
    cli: tuple = ()  # run as `influence-lab CLI...` in a child process instead (Hydra's own errors)
    exit: int = 2  # the exit status of a `cli` row

    @property
    def line(self) -> str:
        return f"| {self.input} | {self.cell or '`' + self.message + '`'} |"


def pattern(message: str) -> str:
    """The regular expression of a README message: `...` stands for any text."""
    return ".*".join(re.escape(part) for part in message.split("..."))


def _folder(tmp_path, n, captions):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), 30 * i, dtype=np.uint8)).save(folder / f"x{i}.png")
        if captions:
            (folder / f"x{i}.txt").write_text("a grey square")
    return folder


def _file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("a file where the output directory should be")
    return blocker


def _fashion(tmp_path, magic: int = 2051) -> Path:
    """Fashion-MNIST's four idx files, tiny: 3 sneakers and 1 ankle boot (image magic `magic`)."""
    import gzip

    folder = tmp_path / "fashion"
    folder.mkdir(exist_ok=True)
    labels = np.array([7, 7, 9, 7], dtype=np.uint8)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (4, 28, 28))
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(head + images.tobytes())
        )
        head = (2049).to_bytes(4, "big") + (4).to_bytes(4, "big")
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(head + labels.tobytes())
        )
    return folder


def _val_id() -> str:
    """An id of the default digits' validation split."""
    return f"digit-{split_indices(1797, 0.1, 0)[1][0]:04d}"


def _fake_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir(exist_ok=True)
    member = {
        "member_id": "m0",
        "method": "fused",
        "arm": "topk",
        "k": 1,
        "seed": 1,
        "targets": [0],
    }
    (sweep / "plan.json").write_text(json.dumps({"jobs": [["m0"]], "members": [member]}))
    (sweep / "config.yaml").write_text("{}\n")
    return sweep


TRAIN_GENERATE = ("train", "generate")
ALL_ZERO_WEIGHTS = [
    f"attribution.fused_weights.{k}=0"
    for k in (
        "raw_cosine",
        "raw_l2",
        "raw_ssim",
        "raw_hist",
        "raw_edit",
        "raw_ngram",
        "latent_model",
        "latent_autoencoder",
    )
]

ROWS = [
    # --- the command line (Hydra's own errors: exit status 1) ---
    Row(
        "`data=mnist`",
        "Could not find 'data/mnist'",
        cli=("train", "data=mnist"),
        exit=1,
        cell=(
            "`Could not find 'data/mnist'` + the available options "
            "(Hydra's own error, exit status 1)"
        ),
    ),
    Row(
        "`model=gan`",
        "Could not find 'model/gan'",
        cli=("generate", "model=gan"),
        exit=1,
        cell=(
            "`Could not find 'model/gan'` + the available options "
            "(Hydra's own error, exit status 1)"
        ),
    ),
    Row(
        "`influence-lab trian`",
        "unknown stage 'trian'; stages are train, generate, attribute, counterfactual, retrain, "
        "featurise, lds, report, pipeline, calibrate, review.",
        cli=("trian",),
    ),
    # --- where results go ---
    Row(
        "`paths.output_dir` is a file (or inside one)",
        "cannot create paths.output_dir '...': ... is a file; set paths.output_dir to a writable "
        "directory.",
        lambda tmp: [f"paths.output_dir={_file(tmp)}/out"],
    ),
    Row(
        "a setting left at `???`, e.g. `data=imagefolder` without a path",
        "data.source.path is not set; point it at a folder of images, e.g. "
        "data.source.path=/path/to/folder.",
        ["data=imagefolder"],
    ),
    Row(
        "`data=imagefolder` without `data.prompts`",
        "data.prompts is not set; give the prompts to sample, e.g. data.prompts='[a red circle]'.",
        lambda tmp: ["data=imagefolder", f"data.source.path={_folder(tmp, 2, True)}"],
    ),
    Row(
        "`seed=-1` (any seed outside 0..2^32-1, or not an integer)",
        "seed is -1; seeds must be integers from 0 to 4294967295.",
        ["seed=-1"],
    ),
    Row("`force=maybe`", "force is 'maybe'; it must be true or false.", ["force=maybe"]),
    # --- data ---
    Row(
        "missing image folder",
        "data.source.path '...' is not a directory; point it at a folder of images.",
        lambda tmp: ["data=imagefolder", f"data.source.path={tmp}/nowhere", "data.prompts=[a]"],
        TRAIN_GENERATE,
    ),
    Row(
        "empty image folder",
        "data.source.path '...' holds no images (...).",
        lambda tmp: [
            "data=imagefolder",
            f"data.source.path={_folder(tmp, 0, True)}",
            "data.prompts=[a]",
        ],
        TRAIN_GENERATE,
    ),
    Row(
        "image without caption",
        "image .../x0.png has no caption file x0.txt; every image in data.source.path needs "
        "a same-named .txt caption (or use metadata.jsonl).",
        lambda tmp: [
            "data=imagefolder",
            f"data.source.path={_folder(tmp, 2, False)}",
            "data.prompts=[a]",
        ],
        TRAIN_GENERATE,
    ),
    Row(
        "`data.source.mode=CMYK`",
        "data.source.mode is 'CMYK'; allowed values are 'L' (grey) and 'RGB'.",
        lambda tmp: [
            "data=imagefolder",
            f"data.source.path={_folder(tmp, 2, True)}",
            "data.prompts=[a]",
            "data.source.mode=CMYK",
        ],
    ),
    Row(
        "`data.source.size=0`",
        "data.source.size is 0; give a positive integer or [H, W] of positive integers.",
        lambda tmp: [
            "data=imagefolder",
            f"data.source.path={_folder(tmp, 2, True)}",
            "data.prompts=[a]",
            "data.source.size=0",
        ],
    ),
    Row(
        "`data=fashion` without the Fashion-MNIST files",
        "Fashion-MNIST is not in data.source.path '...' (missing train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz); install Debian's package (as root: apt-get install "
        "dataset-fashion-mnist, or make data), or put the four standard files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz) into a folder named by data.source.path.",
        lambda tmp: ["data=fashion", f"data.source.path={tmp}/nowhere"],
    ),
    Row(
        "a Fashion-MNIST file with the wrong magic number (or truncated, or not gzip)",
        ".../train-images-idx3-ubyte.gz is not a Fashion-MNIST image file (magic number 2049, "
        "expected 2051); install Debian's package ...",
        lambda tmp: ["data=fashion", f"data.source.path={_fashion(tmp, magic=2049)}"],
    ),
    Row(
        "`data=fashion data.source.classes=[boots]`",
        "data.source.classes has 'boots'; the classes are 0 t-shirt/top, 1 trouser, 2 pullover, "
        "3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.",
        ["data=fashion", "data.source.classes=[boots]"],
    ),
    Row(
        "`data.source.per_class` above what a Fashion-MNIST class holds",
        "data.source.per_class is 4 but class 'sneaker' holds only 3 items in this file; "
        "use at most 3.",
        lambda tmp: [
            "data=fashion",
            f"data.source.path={_fashion(tmp)}",
            "data.source.classes=[sneaker]",
            "data.source.per_class=4",
        ],
    ),
    Row(
        "`data.source.max_items=-5`",
        "data.source.max_items is -5; it must be a positive integer or null.",
        ["data.source.max_items=-5"],
    ),
    Row(
        "`data=names data.source.genders=male`",
        "data.source.genders is 'male'; give a list, e.g. data.source.genders=[female].",
        ["data.source.genders=male"],
        model="chargpt",
    ),
    Row(
        "`data=names data.source.genders=[robot]`",
        "data.source.genders has 'robot'; allowed values are ['female', 'male'].",
        ["data.source.genders=[robot]"],
        model="chargpt",
    ),
    Row(
        "`data=names data.source.genders=[]`",
        "data.source selects no names; give data.source.genders or data.source.surnames.",
        ["data.source.genders=[]"],
        model="chargpt",
    ),
    Row(
        "`data=names data.source.surnames=-1`",
        "data.source.surnames is -1; it must be a non-negative integer.",
        ["data.source.surnames=-1"],
        model="chargpt",
    ),
    Row(
        "`data=names data.source.max_per_list=0`",
        "data.source.max_per_list is 0; it must be a positive integer or null.",
        ["data.source.max_per_list=0"],
        model="chargpt",
    ),
    Row(
        "`data.split.val_fraction=1.5`",
        "data.split.val_fraction is 1.5; it must lie in [0, 1).",
        ["data.split.val_fraction=1.5"],
    ),
    Row(
        "`data.split.seed=-1`",
        "data.split.seed is -1; seeds must be integers from 0 to 4294967295.",
        ["data.split.seed=-1"],
    ),
    Row(
        "`data.prompts=[]`",
        "data.prompts is empty; give at least one prompt, e.g. data.prompts='[a red circle]'.",
        ["data.prompts=[]"],
    ),
    Row(
        "`data.prompts='a red circle'` (not a list)",
        "data.prompts is 'a red circle'; give a list, e.g. data.prompts='[a red circle]'.",
        ["data.prompts='a red circle'"],
    ),
    Row(
        "`data.sample_seeds=0`",
        "data.sample_seeds is 0; it must be a positive integer.",
        ["data.sample_seeds=0"],
    ),
    Row(
        "unknown id to exclude",
        "data.exclude_ids names 1 id(s) not in the dataset (digit-9999); ids look like "
        "'digit-0000'.",
        ["data.exclude_ids=[digit-9999]"],
        TRAIN_GENERATE,
    ),
    Row(
        "validation id to exclude",
        "data.exclude_ids names 1 id(s) in the validation split, not the training split "
        "(...); only training items can be removed.",
        lambda tmp: [f"data.exclude_ids=[{_val_id()}]"],
    ),
    Row(
        "`data.exclude_ids=FILE` that does not exist",
        "data.exclude_ids is '...', which is neither a list of ids nor an existing file of ids.",
        lambda tmp: [f"data.exclude_ids={tmp}/no-such-file"],
    ),
    Row(
        "removal that empties the data",
        "data.exclude_ids removes all 3 training items; at least one must remain.",
        lambda tmp: [
            "data=imagefolder",
            f"data.source.path={_folder(tmp, 3, True)}",
            "data.prompts=[a]",
            "data.split.val_fraction=0",
            "data.exclude_ids=[x0,x1,x2]",
        ],
        TRAIN_GENERATE,
    ),
    Row(
        "`+data.canaries.count=-2`",
        "data.canaries.count is -2; it must be a non-negative integer.",
        ["+data.canaries.count=-2"],
    ),
    Row(
        "`+data.canaries.token=digit`",
        "data.canaries.token 'digit' already occurs in the captions; choose another.",
        ["+data.canaries.count=3", "+data.canaries.token=digit"],
    ),
    Row(
        "`+data.canaries.token='two words'`",
        "data.canaries.token is 'two words'; use one word that no caption contains.",
        ["+data.canaries.count=3", "+data.canaries.token='two words'"],
    ),
    Row(
        "canaries in text data",
        "data.canaries works with image data only.",
        ["+data.canaries.count=3"],
        model="chargpt",
    ),
    # --- model and trainer ---
    Row(
        "image model on text data",
        "model=vae needs image data but data=names holds text; use model=vae, "
        "model=ddpm, model=ldm or model=dalle for images and model=chargpt for text.",
        ["data=names"],
        TRAIN_GENERATE,
    ),
    Row(
        "`model.arch=transformer`",
        "model.arch is 'transformer'; allowed values are 'mlp' and 'conv'.",
        ["model.arch=transformer"],
        TRAIN_GENERATE,
    ),
    Row(
        "`model=ddpm model.arch=conv`",
        "model.arch is 'conv'; allowed values are 'mlp' and 'unet'.",
        ["model.arch=conv"],
        model="ddpm",
    ),
    Row(
        "`model.fit.max_epochs=-1` (Lightning would train forever) or `0`",
        "model.fit.max_epochs is -1; it must be a positive integer.",
        ["model.fit.max_epochs=-1"],
    ),
    Row(
        "`model.fit.batch_size=0`",
        "model.fit.batch_size is 0; it must be a positive integer.",
        ["model.fit.batch_size=0"],
    ),
    Row(
        "`model.fit.snapshots=-1`",
        "model.fit.snapshots is -1; it must be a non-negative integer.",
        ["model.fit.snapshots=-1"],
    ),
    Row(
        "`model.hidden=0` (likewise `latent_dim`, `cond_dim`, `depth`, `timesteps`, "
        "`loss_timesteps`, `block_size`, `n_layer`, `n_head`, `n_embd`)",
        "model.hidden is 0; it must be a positive integer.",
        ["model.hidden=0"],
    ),
    Row(
        "`model=chargpt model.n_head=5`",
        "model.n_embd is 96 but model.n_head is 5; n_embd must be a multiple of n_head.",
        ["model.n_head=5"],
        model="chargpt",
        shrink=False,
    ),
    Row(
        "`model=chargpt model.block_size=8` (texts of 8 or more characters)",
        "model.block_size is 8 but the longest text in data=names has ... characters; set "
        "model.block_size=... or more (the text plus an end token).",
        ["model.block_size=8"],
        model="chargpt",
    ),
    Row(
        "`model=dalle model.text_len=2` (captions of more words)",
        "model.text_len is 2 but the caption '...' in data=digits has ... words; set "
        "model.text_len=... or more.",
        ["model.text_len=2"],
        model="dalle",
    ),
    Row(
        "`model=dalle model.downsample=3`",
        "model.downsample is 3 but the images are 8x8; it must be a power of two (2 or more) "
        "that divides both sides, or null to pick one.",
        ["model.downsample=3"],
        model="dalle",
    ),
    Row("`model.lr=0`", "model.lr is 0; it must be a positive number.", ["model.lr=0"]),
    Row(
        "`model.weight_decay=-0.1`",
        "model.weight_decay is -0.1; it must be a non-negative number.",
        ["model.weight_decay=-0.1"],
    ),
    Row(
        "`model.beta=-1`", "model.beta is -1; it must be a non-negative number.", ["model.beta=-1"]
    ),
    Row(
        "`model.dropout=1.5`",
        "model.dropout is 1.5; it must lie in [0, 1).",
        ["model.dropout=1.5"],
        model="chargpt",
    ),
    Row(
        "`model=ddpm model.p_uncond=1.5`",
        "model.p_uncond is 1.5; it must lie in [0, 1).",
        ["model.p_uncond=1.5"],
        model="ddpm",
    ),
    Row(
        "`model=ddpm model.guidance=strong`",
        "model.guidance is 'strong'; it must be a number.",
        ["model.guidance=strong"],
        model="ddpm",
    ),
    Row(
        "`model=chargpt model.temperature=0`",
        "model.temperature is 0; it must be a positive number.",
        ["model.temperature=0"],
        model="chargpt",
    ),
    Row(
        "`model.conditional=maybe`",
        "model.conditional is 'maybe'; it must be true or false.",
        ["model.conditional=maybe"],
    ),
    Row(
        "`trainer=gpu` on a machine without one",
        "trainer.accelerator is 'gpu' but no GPU is available here; use trainer=cpu.",
        ["trainer=gpu"],
    ),
    Row(
        "`trainer.accelerator=tpu`",
        "trainer.accelerator is 'tpu'; allowed values are cpu, gpu, cuda, mps, auto.",
        ["trainer.accelerator=tpu"],
    ),
    Row(
        "`trainer.devices=0`",
        "trainer.devices is 0; use a positive number of devices, -1 (all) or auto.",
        ["trainer.devices=0"],
    ),
    Row(
        "`trainer.num_threads=0`",
        "trainer.num_threads is 0; it must be a positive integer or null.",
        ["trainer.num_threads=0"],
    ),
    Row(
        "`logger.name=tensorboard`",
        "logger is 'tensorboard'; allowed values are wandb, csv, none.",
        ["logger.name=tensorboard"],
        TRAIN_GENERATE,
    ),
    Row(
        "`logger.mode=ofline`",
        "logger.mode is 'ofline'; allowed values are offline, online, disabled.",
        ["logger=wandb", "logger.mode=ofline"],
        TRAIN_GENERATE,
    ),
    # --- generate ---
    Row(
        "`generate.m=0`",
        "generate.m is 0; it must be a positive integer.",
        ["generate.m=0"],
        ("generate",),
    ),
    Row(
        "`generate.seed=-1`",
        "generate.seed is -1; seeds must be integers from 0 to 4294967295.",
        ["generate.seed=-1"],
        ("generate",),
    ),
    Row(
        "`generate.seed_stride=-1`",
        "generate.seed_stride is -1; it must be a non-negative integer.",
        ["generate.seed_stride=-1"],
        ("generate",),
    ),
    Row(
        "`generate.prompts=[]`",
        "generate.prompts is empty; give at least one prompt.",
        ["generate.prompts=[]"],
        ("generate",),
    ),
    Row(
        "`generate.prompts='a red circle'` (not a list)",
        "generate.prompts is 'a red circle'; give a list, e.g. generate.prompts='[a red circle]'.",
        ["generate.prompts='a red circle'"],
        ("generate",),
    ),
    Row(
        "`generate.prompt_count=0`",
        "generate.prompt_count is 0; it must be a positive integer or null.",
        ["generate.prompt_count=0"],
        ("generate",),
    ),
    Row(
        "`generate.prompt_group=0`",
        "generate.prompt_group is 0; it must be a positive integer or null.",
        ["generate.prompt_count=4", "generate.prompt_group=0"],
        ("generate",),
    ),
    Row(
        "`generate.prompt_seed=-1`",
        "generate.prompt_seed is -1; seeds must be integers from 0 to 4294967295.",
        ["generate.prompt_count=4", "generate.prompt_seed=-1"],
        ("generate",),
    ),
    # --- attribute ---
    Row(
        "`attribution.methods=[best]`",
        "attribution.methods has 'best'; allowed values are paper, fused, caption_only, "
        "raw_only, latent_only, tracin, trak, dtrak, das, unlearn, kfac, ekfac and "
        "latent:<embedder>, or a label of attribution.custom_methods.",
        ["attribution.methods=[best]"],
        ("attribute",),
    ),
    Row(
        "`attribution.methods=[]`",
        "attribution.methods is empty; give at least one method, or auto.",
        ["attribution.methods=[]"],
        ("attribute",),
    ),
    Row(
        "`attribution.methods=[fused,fused]`",
        "attribution.methods has 'fused' twice; list each value once.",
        ["attribution.methods=[fused,fused]"],
        ("attribute",),
    ),
    Row(
        "`attribution.methods=[latent:clip]`",
        "method latent:clip names embedder 'clip', not in attribution.embedders "
        "(model, autoencoder).",
        ["attribution.methods=[latent:clip]"],
        ("attribute",),
    ),
    Row(
        "`dtrak` with a model without the `dtrak` output function",
        "attribution.methods has dtrak, which needs the model output function 'dtrak', which "
        "VAE (model=vae) does not declare (it has measured).",
        ["attribution.methods=[dtrak]"],
        ("attribute", "lds"),
    ),
    Row(
        "`tracin` on a model without snapshots",
        "tracin needs the training snapshots of ..., which has none "
        "(model.fit.snapshots was 0, or the model was trained in a pack); retrain it with "
        "model.fit.snapshots=4 force=true.",
        tested_in="tests/test_gradients.py",
        evidence="tracin needs the training snapshots of",
    ),
    Row(
        "`influence-lab featurise shard=1` without `shard_size`",
        "shard is 1 but attribution.gradient.shard_size is not set; give the shard size too, "
        "e.g. +attribution.gradient.shard_size=8192.",
        tested_in="tests/test_featurise.py",
        evidence="attribution.gradient.shard_size is not set",
    ),
    Row(
        "`influence-lab featurise shard=5` (270 items in shards of 64)",
        "shard is 5; 270 items in shards of 64 make shards 0..4.",
        tested_in="tests/test_featurise.py",
        evidence="make shards 0..4",
    ),
    Row(
        "`influence-lab featurise 'attribution.methods=[fused]'`",
        "attribution.methods names no gradient method, so there is nothing to featurise; "
        "name one, e.g. 'attribution.methods=[trak]'.",
        tested_in="tests/test_featurise.py",
        evidence="names no gradient method",
    ),
    Row(
        "`paper` on text data",
        "attribution.methods has paper, which needs image data, but model=chargpt works on text.",
        tested_in="tests/test_attribute_stage.py",
        evidence="has paper, which needs image data",
    ),
    Row(
        "`attribution.embedders=[model,clip]`",
        "attribution.embedders names ['clip'], which have no settings under "
        "embedders (known: model, autoencoder, classifier).",
        ["attribution.embedders=[model,clip]"],
        ("attribute",),
    ),
    Row(
        "`attribution.embedders=[]` with `latent_only` (`auto` leaves it out)",
        "attribution.methods has latent_only, which needs at least one embedder in "
        "attribution.embedders.",
        ["attribution.embedders=[]", "attribution.methods=[latent_only]"],
        ("attribute",),
    ),
    Row(
        "`attribution.paper_embedder` not in `attribution.embedders`",
        "attribution.paper_embedder 'model' is not in attribution.embedders.",
        [
            "attribution.methods=[paper]",
            "attribution.embedders=[autoencoder]",
            "attribution.paper_embedder=model",
        ],
        ("attribute",),
    ),
    Row(
        "`embedders.autoencoder.kind=clip`",
        "embedders.autoencoder.kind is 'clip'; allowed values are model, autoencoder, "
        "classifier, pretrained.",
        ["embedders.autoencoder.kind=clip"],
        ("attribute",),
    ),
    Row(
        "`embedders.autoencoder.epochs=0` (likewise `hidden`, `latent_dim`)",
        "embedders.autoencoder.epochs is 0; it must be a positive integer.",
        ["embedders.autoencoder.epochs=0"],
        ("attribute",),
    ),
    Row(
        "the `pretrained` embedder without a weights file",
        "embedders.pretrained.weights is null, which is not a "
        "file; name a local torchvision state-dict file for 'resnet18' (nothing is downloaded).",
        [
            "+embedder@embedders.pretrained=pretrained",
            "attribution.embedders=[model,autoencoder,pretrained]",
        ],
        ("attribute",),
    ),
    Row(
        "`attribution.filter=grep`",
        "attribution.filter is 'grep'; allowed values are tfidf, bm25.",
        ["attribution.filter=grep"],
        ("attribute",),
    ),
    Row(
        "`attribution.pool_size=0`",
        "attribution.pool_size is 0; it must be a positive integer or null.",
        ["attribution.pool_size=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.pool_size` larger than the training set",
        "attribution.pool_size is ... but the training set has ... items; choose at most that "
        "many, or null.",
        ["attribution.pool_size=99999"],
        ("attribute",),
    ),
    Row(
        "`attribution.search_k=0`",
        "attribution.search_k is 0; it must be a positive integer or null.",
        ["attribution.search_k=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.grid_top=0`",
        "attribution.grid_top is 0; it must be a positive integer.",
        ["attribution.grid_top=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.keep=0`",
        "attribution.keep is 0; it must be a positive integer.",
        ["attribution.keep=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.fused_weights.raw_cosine=high`",
        "attribution.fused_weights.raw_cosine is 'high'; it must be a number.",
        ["attribution.fused_weights.raw_cosine=high"],
        ("attribute",),
    ),
    Row(
        "every `attribution.fused_weights` 0",
        "attribution.fused_weights gives every available signal weight 0.",
        ALL_ZERO_WEIGHTS,
        ("attribute",),
    ),
    Row(
        "`attribution.index.type=annoy`",
        "attribution.index.type is 'annoy'; allowed values are flat, ivf, hnsw.",
        ["attribution.index.type=annoy"],
        ("attribute",),
    ),
    Row(
        "`attribution.index.metric=cosine`",
        "attribution.index.metric is 'cosine'; allowed values are ip and l2.",
        ["attribution.index.metric=cosine"],
        ("attribute",),
    ),
    Row(
        "`attribution.index.hnsw_m=0` (faiss would abort; likewise `nlist`, `nprobe`, `ef_search`)",
        "attribution.index.hnsw_m is 0; it must be a positive integer.",
        ["attribution.index.hnsw_m=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.gradient.proj_dim=0`",
        "attribution.gradient.proj_dim is 0; it must be a positive integer.",
        ["attribution.gradient.proj_dim=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.gradient.ensemble=0`",
        "attribution.gradient.ensemble is 0; it must be a positive integer.",
        ["attribution.gradient.ensemble=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.gradient.damping=0`",
        "attribution.gradient.damping is 0; it must be a positive number.",
        ["attribution.gradient.damping=0"],
        ("attribute",),
    ),
    Row(
        "`attribution.gradient.projector=dense`",
        "attribution.gradient.projector is 'dense'; allowed values are auto, sparse, normal.",
        ["attribution.gradient.projector=dense"],
        ("attribute",),
    ),
    Row(
        "`attribution.gradient.dtrak_timesteps` above `model.timesteps` (with `dtrak`)",
        "attribution.gradient.dtrak_timesteps is 30 but model.timesteps is 20; "
        "D-TRAK's timesteps are the model's, so it must be at most 20.",
        ["attribution.gradient.dtrak_timesteps=30", "attribution.methods=[fused,dtrak]"],
        ("attribute", "lds"),
        model="ddpm",
    ),
    # --- counterfactual ---
    Row(
        "`seed=1 counterfactual.seeds=[1,2]` (the `none` arm on the full model's own seed)",
        "counterfactual.seeds has 1, the full model's own seed (seed=1): the `none` arm would "
        "retrain the full model exactly and measure nothing; give other seeds, e.g. "
        "counterfactual.seeds=[3,4].",
        ["seed=1", "counterfactual.seeds=[1,2]"],
        ("counterfactual", "pipeline"),
    ),
    Row(
        "`counterfactual.k=[0]`",
        "counterfactual.k has 0; each k must be a positive integer.",
        ["counterfactual.k=[0]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k=5` (not a list)",
        "counterfactual.k is 5; give a list, e.g. counterfactual.k=[10].",
        ["counterfactual.k=5"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k=[]`",
        "counterfactual.k is empty; give at least one number of items to remove.",
        ["counterfactual.k=[]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k=[10,10]`",
        "counterfactual.k has 10 twice; list each value once.",
        ["counterfactual.k=[10,10]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k` above `attribution.keep`",
        "counterfactual.k has 200 but attribution.keep is 100; each k "
        "must be at most attribution.keep (the ranked items kept per prompt).",
        ["counterfactual.k=[200]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k` not below the training set's size",
        "counterfactual.k has ... but the training set has only ... items; each k must be smaller.",
        ["counterfactual.k=[270]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k` above a method's ranking (a pool-only method, e.g. `fused`)",
        "method fused ranked only ... items for target 0, fewer than k=...; raise "
        "attribution.keep (or attribution.pool_size, for a method that ranks only the pool) or "
        "lower counterfactual.k.",
        ["counterfactual.methods=[fused]", "counterfactual.k=[250]", "counterfactual.arms=[topk]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.k` above the prompt filter's pool (arm `random_pool`)",
        "counterfactual.k has ... but the prompt filter's pool of target 0 holds ... items; lower "
        "counterfactual.k or raise attribution.pool_size.",
        ["counterfactual.k=[250]", "counterfactual.arms=[topk,random_pool]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.arms=[topk,boo]`",
        "counterfactual.arms has ['boo']; allowed values are topk, bottomk, random_pool, random, "
        "none.",
        ["counterfactual.arms=[topk,boo]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.arms=[random,none]`",
        "counterfactual.arms needs topk (or bottomk): there is nothing to test otherwise.",
        ["counterfactual.arms=[random,none]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.arms=[topk,topk]`",
        "counterfactual.arms has 'topk' twice; list each value once.",
        ["counterfactual.arms=[topk,topk]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.seeds=[]`",
        "counterfactual.seeds is empty; give at least one training seed.",
        ["counterfactual.seeds=[]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.seeds=[-1]`",
        "counterfactual.seeds has -1; seeds must be integers from 0 to 4294967295.",
        ["counterfactual.seeds=[-1]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.seeds=[1,1]`",
        "counterfactual.seeds has 1 twice; list each value once.",
        ["counterfactual.seeds=[1,1]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.grouping=all`",
        "counterfactual.grouping is 'all'; allowed values are per_target, grouped.",
        ["counterfactual.grouping=all"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.group_size=0`",
        "counterfactual.group_size is 0; use a positive number of prompts or null.",
        ["counterfactual.group_size=0"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.methods=[]`",
        "counterfactual.methods is empty; give at least one attribution method, or auto.",
        ["counterfactual.methods=[]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.methods=[fused,fused]`",
        "counterfactual.methods has 'fused' twice; list each value once.",
        ["counterfactual.methods=[fused,fused]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.methods` not in a list of `attribution.methods`",
        "counterfactual.methods has ['trak'], which attribution.methods does not include "
        "(fused, caption_only); add them to attribution.methods.",
        ["attribution.methods=[fused,caption_only]", "counterfactual.methods=[trak]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.methods` that `attribution.methods=auto` did not run",
        "counterfactual.methods has ['trak'], which the attribute stage did not run (it ran ...); "
        "add them to attribution.methods.",
        ["attribution.methods=auto", "counterfactual.methods=[trak]"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.pack_size=0`",
        "counterfactual.pack_size is 0; it must be a positive integer.",
        ["counterfactual.pack_size=0"],
        ("counterfactual",),
    ),
    Row(
        "`influence-lab calibrate calibrate.runs=0`",
        "calibrate.runs is 0; it must be a positive integer.",
        ["calibrate.runs=0"],
        ("calibrate",),
    ),
    Row(
        "`influence-lab review review.port=70000`",
        "review.port is 70000; give a TCP port from 0 to 65535 (0: any free port).",
        ["review.port=70000"],
        ("review",),
    ),
    Row(
        "`influence-lab review invite` without a name",
        "review invite needs a name: influence-lab review invite NAME.",
        cli=("review", "invite"),
    ),
    Row(
        "`counterfactual.nulls=true` without a control in `counterfactual.arms`",
        "counterfactual.nulls needs topk and at least one control in counterfactual.arms.",
        ["counterfactual.nulls=true", "counterfactual.arms=[topk]"],
        ("counterfactual",),
    ),
    Row(
        "`replicates=2 counterfactual.seeds=[1,1001]`",
        "counterfactual.seeds spans 1..1001, but replicates (and calibrate's null runs) shift "
        "every seed by 1000: one replicate would retrain another's models; keep the seeds "
        "within 999 of each other.",
        ["replicates=2", "counterfactual.seeds=[1,1001]"],
        ("counterfactual",),
    ),
    Row(
        "`+attribution.gradient.pinned_dampings={fused:10}`",
        "attribution.gradient.pinned_dampings names ['fused'], which attribution.methods does not "
        "run as a method that tunes a damping (none does).",
        ["+attribution.gradient.pinned_dampings={fused:10}"],
        ("attribute",),
    ),
    Row(
        "`counterfactual.launcher=nonesuch`",
        "counterfactual.launcher is 'nonesuch'; use one of the launchers installed here: "
        "basic, ...",
        ["counterfactual.launcher=nonesuch"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.launcher_overrides=abc` (not a list)",
        "counterfactual.launcher_overrides is 'abc'; give a "
        "list, e.g. counterfactual.launcher_overrides=[hydra.launcher.partition=debug].",
        ["counterfactual.launcher_overrides=abc"],
        ("counterfactual",),
    ),
    Row(
        "`counterfactual.embedders=[clip]`",
        "counterfactual.embedders names ['clip'], which have no settings under "
        "embedders (known: model, autoencoder, classifier).",
        ["counterfactual.embedders=[clip]"],
        ("counterfactual",),
    ),
    # --- retrain ---
    Row(
        "`influence-lab retrain` without `sweep_dir`",
        "sweep_dir is not set; influence-lab counterfactual launches retrain with the sweep "
        "directory.",
        [],
        ("retrain",),
    ),
    Row(
        "`sweep_dir` without a plan",
        "sweep_dir '...' holds no plan.json; run influence-lab counterfactual first.",
        lambda tmp: [f"sweep_dir={tmp}"],
        ("retrain",),
    ),
    Row(
        "`job=5` in a sweep of one job",
        "job is 5; this sweep has jobs 0..0.",
        lambda tmp: [f"sweep_dir={_fake_sweep(tmp)}", "job=5"],
        ("retrain",),
    ),
    # --- lds ---
    Row(
        "`lds.alpha=1.5`",
        "lds.alpha is 1.5; it must be strictly between 0 and 1.",
        ["lds.alpha=1.5"],
        ("lds",),
    ),
    Row(
        "`lds.subsets=2`",
        "lds.subsets is 2; a rank correlation needs at least 3 subsets.",
        ["lds.subsets=2"],
        ("lds",),
    ),
    Row(
        "`lds.seeds=[]`",
        "lds.seeds is empty; give at least one training seed.",
        ["lds.seeds=[]"],
        ("lds",),
    ),
    Row(
        "`lds.trak_ensembles=[0]`",
        "lds.trak_ensembles is [0]; give sizes >= 1.",
        ["lds.trak_ensembles=[0]"],
        ("lds",),
    ),
    Row(
        "`lds.methods=[bogus]`",
        "lds.methods has 'bogus'; allowed values are paper, fused, caption_only, raw_only, "
        "latent_only, tracin, trak, dtrak, das, unlearn, kfac, ekfac and latent:<embedder>, "
        "or a label of attribution.custom_methods.",
        ["lds.methods=[bogus]"],
        ("lds",),
    ),
    Row(
        "`lds.subset_seed=-1`",
        "lds.subset_seed is -1; seeds must be integers from 0 to 4294967295.",
        ["lds.subset_seed=-1"],
        ("lds",),
    ),
    Row(
        "`lds.pack_size=0`",
        "lds.pack_size is 0; it must be a positive integer.",
        ["lds.pack_size=0"],
        ("lds",),
    ),
    Row(
        "`lds.targets_per_prompt=0`",
        "lds.targets_per_prompt is 0; it must be a positive integer or null.",
        ["lds.targets_per_prompt=0"],
        ("lds",),
    ),
    Row(
        "`lds.memorization_top=0`",
        "lds.memorization_top is 0; it must be a positive integer.",
        ["lds.memorization_top=0"],
        ("lds",),
    ),
    Row(
        "`lds.track_items=-1`",
        "lds.track_items is -1; it must be a non-negative integer.",
        ["lds.track_items=-1"],
        ("lds",),
    ),
    Row(
        "`lds.bootstrap=0`",
        "lds.bootstrap is 0; it must be a positive integer.",
        ["lds.bootstrap=0"],
        ("lds",),
    ),
    Row(
        "`lds.runs=['model=ddpm']` (a run that is not a list)",
        "lds.runs has 'model=ddpm'; each run is a list of "
        "overrides, e.g. [[model=ddpm], [model=vae]].",
        ["lds.runs=['model=ddpm']"],
        ("lds",),
    ),
    Row(
        "a bad setting in one of `lds.runs`",
        "lds.runs entry 1 (lds.subsets=2): lds.subsets is 2; a rank correlation "
        "needs at least 3 subsets.",
        ["lds.runs=[[],['lds.subsets=2']]"],
        ("lds",),
    ),
    # --- pipeline and report ---
    Row(
        "`pipeline.runs=['model=vae']` (a run that is not a list)",
        "pipeline.runs has 'model=vae'; each run is a "
        "list of overrides, e.g. [[model=ddpm], [model=vae]].",
        ["pipeline.runs=['model=vae']"],
        ("pipeline",),
    ),
    Row(
        "a bad setting in one of `pipeline.runs`",
        "pipeline.runs entry 1 (model.fit.batch_size=0): "
        "model.fit.batch_size is 0; it must be a positive integer.",
        ["pipeline.runs=[[],['model.fit.batch_size=0']]"],
        ("pipeline",),
    ),
    Row(
        "`report.max_grids=-1`",
        "report.max_grids is -1; it must be a non-negative integer.",
        ["report.max_grids=-1"],
        ("report",),
    ),
    Row(
        "`influence-lab report` with no results",
        "no finished attribute, counterfactual or lds results for "
        "vae-digits under ...; run influence-lab pipeline (or lds) with the same model and data "
        "first.",
        [],
        ("report",),
    ),
]

# rows whose checks need earlier results (a trained model, generated outputs, an attribution): they
# run against one small attribute result shared by the module
NEEDS_RESULTS = {
    "`attribution.pool_size` larger than the training set",
    "every `attribution.fused_weights` 0",
    "`counterfactual.k` not below the training set's size",
    "`counterfactual.k` above a method's ranking (a pool-only method, e.g. `fused`)",
    "`counterfactual.k` above the prompt filter's pool (arm `random_pool`)",
    "`counterfactual.methods` that `attribution.methods=auto` did not run",
}
# the shared result: 270 training items, two prompts, a pool of about 40 captions per prompt
SMALL = [
    "data.source.max_items=300",
    "model.fit.max_epochs=1",
    "generate.m=2",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
    "embedders.autoencoder.epochs=1",
    "attribution.methods=[fused,caption_only]",
    "attribution.pool_size=30",
    "attribution.keep=300",
    "attribution.gradient.proj_dim=64",
]
SMALL_COUNTERFACTUAL = ["counterfactual.methods=[caption_only]", "counterfactual.seeds=[1]"]


def _overrides(row: Row, tmp_path, stage: str) -> list[str]:
    own = row.overrides(tmp_path) if callable(row.overrides) else list(row.overrides)
    if row.input not in NEEDS_RESULTS:
        return own
    return [*SMALL, *(SMALL_COUNTERFACTUAL if stage == "counterfactual" else []), *own]


def _run_and_check(stage: str, cfg, message: str, capsys) -> str:
    err = stage_error(STAGES[stage], cfg, capsys)
    assert re.search("error: " + pattern(message) + "$", err), err
    return err


def _dones(root: Path) -> set[Path]:
    return set(Path(root).rglob("done"))


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    """One small attribute result (and its model and outputs) for the rows that need earlier
    results."""
    out = tmp_path_factory.mktemp("attributed")
    STAGES["attribute"].attribute(make_cfg("attribute", out, *SMALL))
    return out


STAGE_ROWS = [row for row in ROWS if not row.tested_in and not row.cli]


@pytest.mark.parametrize("row", [r for r in ROWS if r.cli], ids=lambda r: r.input)
def test_command_line_rows_from_the_cli(row, tmp_path):
    out = run_cli(
        *row.cli, *([f"paths.output_dir={tmp_path}"] if len(row.cli) > 1 else []), cwd=tmp_path
    )
    assert out.returncode == row.exit, out.stderr
    assert re.search(pattern(row.message), " ".join(out.stderr.split())), out.stderr
    assert not _dones(tmp_path)


@pytest.mark.parametrize("stage", ["pipeline", "lds"])
def test_every_run_is_checked_before_the_first_trains(stage, tmp_path, capsys):
    """A bad second entry of `<stage>.runs` is refused before the first entry trains anything."""
    out = tmp_path / "out"
    good = ["model=vae", f"paths.output_dir={out}", "logger=none", "model.fit.max_epochs=1"]
    quoted = ",".join(f"'{o}'" for o in good)
    runs = f"[[{quoted}],[{quoted},'model.hidden=0']]"
    cfg = make_cfg(stage, out, f"{stage}.runs={runs}")
    err = stage_error(STAGES[stage], cfg, capsys)
    assert re.search(
        rf"error: {stage}.runs entry 1 \(.*model.hidden=0\): "
        r"model.hidden is 0; it must be a positive integer.$",
        err,
    ), err
    assert not (out / "train").exists() and not _dones(tmp_path)


@pytest.mark.parametrize(
    "row", [r for r in STAGE_ROWS if r.input not in NEEDS_RESULTS], ids=lambda r: r.input
)
def test_bad_input_message_exit_and_no_done_marker(row, cfg_factory, tmp_path, capsys):
    if row.input.startswith("`trainer=gpu`"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    for stage in row.stages:
        cfg = cfg_factory(
            stage, *_overrides(row, tmp_path, stage), model=row.model, shrink=row.shrink
        )
        err = _run_and_check(stage, cfg, row.message, capsys)
        assert err.startswith("error: "), err  # nothing ran before the check
        assert not _dones(tmp_path)


@pytest.mark.parametrize(
    "row", [r for r in STAGE_ROWS if r.input in NEEDS_RESULTS], ids=lambda r: r.input
)
def test_bad_input_found_with_the_results_reports_and_writes_no_done_marker(
    row, attributed, tmp_path, capsys
):
    before = _dones(attributed)
    for stage in row.stages:
        cfg = make_cfg(stage, attributed, *_overrides(row, tmp_path, stage))
        _run_and_check(stage, cfg, row.message, capsys)
        new = _dones(attributed) - before
        assert not [p for p in new if stage in p.parts], new  # the failing stage finished nothing


@pytest.mark.parametrize(
    "stage,model,setting",
    [
        ("train", "vae", "model.latent_dim"),
        ("train", "vae", "model.cond_dim"),
        ("train", "ddpm", "model.depth"),
        ("train", "ddpm", "model.timesteps"),
        ("train", "ddpm", "model.loss_timesteps"),
        ("train", "chargpt", "model.block_size"),
        ("train", "chargpt", "model.n_layer"),
        ("train", "chargpt", "model.n_head"),
        ("train", "chargpt", "model.n_embd"),
        ("train", "vae", "model.fit.max_epochs"),
        ("attribute", "vae", "attribution.index.nlist"),
        ("attribute", "vae", "attribution.index.nprobe"),
        ("attribute", "vae", "attribution.index.ef_search"),
        ("attribute", "vae", "embedders.autoencoder.hidden"),
        ("attribute", "vae", "embedders.autoencoder.latent_dim"),
    ],
)
def test_every_size_setting_must_be_positive(stage, model, setting, cfg_factory, tmp_path, capsys):
    cfg = cfg_factory(stage, f"{setting}=0", model=model)
    _run_and_check(stage, cfg, f"{setting} is 0; it must be a positive integer.", capsys)
    assert not _dones(tmp_path)


def _catalogue_section() -> str:
    """The "Bad input" page up to its next `## ` heading."""
    return CATALOGUE.read_text().split("# Bad input\n", 1)[1].split("\n## ", 1)[0]


def _bad_input_table() -> list[str]:
    section = _catalogue_section()
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| input |"), lines[0]
    return lines[1:]


def test_catalogue_lists_every_row_and_only_these():
    table = _bad_input_table()
    missing = [row.line for row in ROWS if row.line not in table]
    assert not missing, "rows missing from the Bad input table of docs/bad-input.md:\n" + "\n".join(
        missing
    )
    extra = sorted(set(table) - {row.line for row in ROWS})
    assert not extra, "docs/bad-input.md rows that no test checks:\n" + "\n".join(extra)
    assert len(table) == len(set(table)) == len(ROWS)
    for row in ROWS:
        if row.tested_in:
            assert row.evidence in row.message, row
            assert row.evidence in (ROOT / row.tested_in).read_text(), row
    named = {row.tested_in for row in ROWS if row.tested_in} | {"tests/test_bad_input.py"}
    section = _catalogue_section()
    assert all(f"`{name}`" in section for name in named), named


def test_unknown_source_model_and_stage_from_therun_cli(tmp_path):
    out = run_cli("train", "data=mnist", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 1
    assert "Could not find 'data/mnist'" in out.stderr
    assert "digits" in out.stderr and "names" in out.stderr and "imagefolder" in out.stderr
    out = run_cli("generate", "model=gan", f"paths.output_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 1 and "Could not find 'model/gan'" in out.stderr
    assert "chargpt" in out.stderr and "ddpm" in out.stderr and "vae" in out.stderr
    out = run_cli("trian", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: unknown stage 'trian'; stages are train, generate, attribute, counterfactual, "
        "retrain, featurise, lds, report, pipeline, calibrate, review."
    )
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0 and "train " in out.stdout and "generate " in out.stdout
    assert not list(Path(tmp_path).rglob("done"))


def test_an_output_dir_in_a_file_is_refused_before_hydra_creates_its_run_directory(tmp_path):
    blocker = _file(tmp_path)
    out = run_cli("train", f"paths.output_dir={blocker}/out", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        f"error: cannot create paths.output_dir '{blocker}/out': {blocker} is a file; "
        f"set paths.output_dir to a writable directory."
    )
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "afile"
    ]  # nothing written, not even Hydra's logs
