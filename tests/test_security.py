"""Security guarantees: no write outside paths.output_dir and no read outside the data folder,
whatever the data's file names, captions and prompts; only influence_lab classes and loaders are
imported from a config; no config resolver runs code; static checks of the source for unsafe
loads."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from influence_lab.data import load_data
from influence_lab.data.sources import load_imagefolder
from influence_lab.errors import InfluenceLabError
from influence_lab.store.paths import check_name, inside, is_safe_name, safe_name
from tests.conftest import stage_error, typed

SRC = Path(__file__).resolve().parent.parent / "src" / "influence_lab"

HOSTILE = [
    "../../../escaped",
    "/etc/passwd",
    "..\\..\\windows\\system32",
    "C:\\Users\\x",
    "..",
    ".",
    "",
    "-rf --no-preserve-root",
    "$(touch pwned) `id`",
    "ʕ•ᴥ•ʔ ../ ünïcødé ☃",
    "a/../../b",
    "%2e%2e%2f%2e%2e%2f",
    "line\nbreak",
    "x" * 500,
    ".hidden",
    "CON",
]


# --- safe names ---------------------------------------------------------------------------------


def test_safe_name_is_one_component_readable_and_unique(tmp_path):
    names = [safe_name(t) for t in HOSTILE]
    for text, name in zip(HOSTILE, names, strict=True):
        assert is_safe_name(name), (text, name)
        assert (
            "/" not in name
            and "\\" not in name
            and name not in (".", "..")
            and not name.startswith(("-", "."))
        )
        assert len(name) <= 60
        assert inside(tmp_path, tmp_path / name) == tmp_path / name
        assert (tmp_path / name).parent == tmp_path
    assert len(set(names)) == len(names)  # distinct strings, distinct names
    assert safe_name("../../../escaped").startswith("escaped-")  # readable
    for plain in ("fused", "latent_autoencoder", "digit-0001", "vae-digits", "CON"):
        assert safe_name(plain) == plain  # ordinary names do not change
    assert safe_name("digit zero, regular") != safe_name(
        "digit zero  regular"
    )  # same slug, other hash


def test_inside_refuses_paths_that_leave_the_root(tmp_path):
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    assert inside(root, root / "sub" / "file.png") == root / "sub" / "file.png"
    assert inside(root, root / "sub" / ".." / "file.png") == root / "sub" / ".." / "file.png"
    (root / "link").symlink_to(tmp_path / "elsewhere")
    for bad in (
        root / ".." / "x",
        root / "sub" / ".." / ".." / "x",
        Path("/etc/passwd"),
        root / "link" / "x",
        root / "a\x00b",
    ):
        with pytest.raises(InfluenceLabError, match="refusing to use it"):
            inside(root, bad)


@pytest.mark.parametrize("value", ["../x", "a/b", "/abs", "..", "", "-x", "ü", "x" * 101])
def test_model_and_data_names_must_be_plain_components(value, cfg_factory, capsys):
    with pytest.raises(InfluenceLabError, match="data.name is .*; it names output directories"):
        check_name(value, "data.name")
    from influence_lab.stages import train as train_stage

    cfg = cfg_factory("train")
    cfg.data.name = value
    with pytest.raises(SystemExit) as info:
        train_stage.run(cfg)
    assert info.value.code == 2
    assert "data.name is" in capsys.readouterr().err


# --- the real stages with hostile file names, captions and prompts --------------------------------


def _tree(root: Path) -> dict[str, str]:
    """Every file and directory under `root` (links not followed), with a hash of each file."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(folder, d)] = "dir"
        for f in files:
            p = os.path.join(folder, f)
            out[p] = (
                "link" if os.path.islink(p) else hashlib.sha256(Path(p).read_bytes()).hexdigest()
            )
    return out


HOSTILE_FILES = {  # image stem (relative to the data folder) -> caption
    "..\\..\\evil-win": "../../../escaped caption",
    "ünïcødé ☃ snow": "ʕ•ᴥ•ʔ ../ unicode caption",
    "-rf --no-preserve-root": "..\\..\\windows caption",
    "$(touch pwned)": "$(touch pwned) `id` caption",
    "..": "digit/../../x caption",
    "sub dir/nested/é": "%2e%2e%2f caption",
    "a%2F..%2Fb": "CON caption",
    "line\nbreak": "line\nbreak caption",
    "tex": "costs $\\undefinedcmd{$ and $5",  # matplotlib would parse this as (broken) TeX
}


def _hostile_folder(folder: Path, sentinel: Path) -> list[str]:
    files = dict(HOSTILE_FILES)
    files["abs"] = f"{sentinel}/abs caption"
    # from <out>/attribute/<run>/neighbours/, six or seven '..' lead exactly to the sentinel folder
    files["deep6"] = "../../../../../../sentinel/escaped6"
    files["deep7"] = "../../../../../../../sentinel/escaped7"
    for i in range(8):
        files[f"img{i}"] = f"a grey square number {i}"
    for n, (stem, caption) in enumerate(files.items()):
        path = folder / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), (13 * n) % 256, dtype=np.uint8)).save(path, format="PNG")
        path.with_suffix(".txt").write_text(caption)
    return [
        "../../../escaped caption",
        f"{sentinel}/abs caption",
        "..\\..\\windows caption",
        "ʕ•ᴥ•ʔ ../ unicode caption",
        files["deep6"],
        files["deep7"],
        files["tex"],
    ]


def test_hostile_names_captions_and_prompts_never_leave_the_output_dir(
    cfg_factory, tmp_path, monkeypatch
):
    from influence_lab.stages.attribute import attribute
    from influence_lab.stages.report import report

    data = tmp_path / "data" / "imgs"
    out = tmp_path / "work" / "deep" / "out"
    sentinel = tmp_path / "sentinel"
    cwd = tmp_path / "work" / "cwd"
    for d in (data, sentinel, cwd):
        d.mkdir(parents=True)
    prompts = _hostile_folder(data, sentinel)
    monkeypatch.chdir(cwd)  # anything written relative to the working directory would show up here
    before = _tree(tmp_path.parent)
    base = [
        "data=imagefolder",
        f"data.source.path={data}",
        "data.source.size=8",
        f"paths.output_dir={out}",
        "data.prompts=[x]",
    ]
    cfg = cfg_factory(
        "attribute",
        *base,
        "generate.m=2",
        "model.fit.max_epochs=2",
        "embedders.autoencoder.epochs=2",
        "attribution.pool_size=null",
        "attribution.keep=8",
        "attribution.grid_top=4",
    )
    cfg.data.prompts = prompts  # set directly: no override-grammar escaping in the way
    run = attribute(cfg)
    report(cfg_factory("report", *base))
    after = _tree(tmp_path.parent)

    created = sorted(set(after) - set(before))
    outside = [
        p for p in created if not Path(p).is_relative_to(out) and not out.is_relative_to(p)
    ]  # out's parents
    assert not outside, outside
    changed = [p for p in before if before[p] != after.get(p)]
    assert not changed, changed  # the data folder (and everything else) untouched
    assert not list(sentinel.iterdir()) and not list(cwd.iterdir())
    assert not [p for p in after if "pwned" in Path(p).name and not Path(p).is_relative_to(data)]
    # the stages did run, with the hostile prompts and ids
    table = pd.read_parquet(run / "attribution.parquet")
    assert sorted(table.prompt.unique()) == sorted(prompts)
    assert not [i for i in table.id.unique() if "/" in i or "\\" in i or i in (".", "..")]
    grids = sorted((run / "neighbours").glob("*"))
    assert len(grids) == len(prompts) * table.method.nunique()
    assert all(re.fullmatch(r"\d{3}-[a-z0-9-]+\.png", g.name) for g in grids)
    assert (out / "report" / "vae-imagefolder" / "report.html").exists()


def test_figures_show_dollar_signs_from_the_data_literally(tmp_path):
    """Captions, ids and prompts with '$...$' are drawn as text, never parsed as TeX (a bad one
    would stop the stage with a matplotlib parse error)."""
    from influence_lab.reporting.figures import image_grid, plain
    from influence_lab.reporting.lds_figures import dynamics_plot, memorization_grid
    from influence_lab.reporting.neighbours import neighbour_grid

    tex = "costs $\\undefinedcmd{$ and $5"
    imgs = np.zeros((2, 1, 4, 4), dtype=np.float32)
    paths = [
        image_grid(imgs[None].repeat(2, 0), [tex, "x"], tmp_path / "grid.png", title=tex),
        neighbour_grid(tex, "fused", imgs, imgs, [tex, tex], tmp_path / "nb.png"),
        memorization_grid(imgs, [tex, tex], tmp_path / "mem.png", tex),
        dynamics_plot(
            pd.DataFrame(
                {
                    "id": [tex] * 4,
                    "epoch": [0, 1, 0, 1],
                    "loss": [1.0, 0.5, 1.0, 0.9],
                    "included": [True, True, False, False],
                }
            ),
            tmp_path / "dyn.png",
            tex,
        ),
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert plain("a $x$ b") == "a \\$x\\$ b" and plain("plain") == "plain"


# --- reading the data folder ----------------------------------------------------------------------


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), 100, dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.mark.parametrize(
    "file_name",
    [
        "../../secret.png",
        "ABSOLUTE",
        "..\\..\\secret.png",
        "sub/../../../secret.png",
        "C:\\secret.png",
        "\\\\server\\share\\secret.png",
        "bad\x00.png",
        7,
        "",
    ],
)
def test_metadata_file_name_outside_the_folder_is_refused(file_name, tmp_path, monkeypatch):
    secret = _image(
        tmp_path / "secret.png"
    )  # a readable image: only the check can stop it being read
    folder = tmp_path / "data" / "meta"
    _image(folder / "ok.png")
    if file_name == "ABSOLUTE":
        file_name = str(secret)
    rows = [{"file_name": "ok.png", "text": "fine"}, {"file_name": file_name, "text": "evil"}]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k)
    )
    with pytest.raises(InfluenceLabError) as info:
        load_imagefolder(str(folder), size=4)
    message = str(info.value)
    assert "metadata.jsonl line 2" in message and repr(file_name) in message
    assert "data.source.path" in message
    assert not [p for p in opened if Path(p).resolve() == secret.resolve()]


def test_links_out_of_the_data_folder_are_refused(tmp_path, cfg_factory, capsys):
    secret = _image(tmp_path / "secret.png")
    (tmp_path / "secret.txt").write_text("the secret caption")
    meta = tmp_path / "meta"
    _image(meta / "ok.png")
    (meta / "link.png").symlink_to(secret)
    (meta / "metadata.jsonl").write_text(
        '{"file_name": "ok.png", "text": "a"}\n{"file_name": "link.png", "text": "b"}\n'
    )
    with pytest.raises(
        InfluenceLabError, match=r"line 2: file_name 'link.png' leads outside data.source.path"
    ):
        load_imagefolder(str(meta))
    # .txt captions: a linked image, then a linked caption
    txt = tmp_path / "txt"
    _image(txt / "ok.png")
    (txt / "ok.txt").write_text("fine")
    (txt / "zlink.png").symlink_to(secret)
    (txt / "zlink.txt").write_text("b")
    with pytest.raises(
        InfluenceLabError, match=r"image .*zlink.png leads outside data.source.path"
    ):
        load_imagefolder(str(txt))
    (txt / "zlink.png").unlink()
    _image(txt / "zlink.png")
    (txt / "zlink.txt").unlink()
    (txt / "zlink.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(
        InfluenceLabError, match=r"caption file .*zlink.txt leads outside data.source.path"
    ):
        load_imagefolder(str(txt))
    # through a stage: one sentence, exit 2, no result
    from influence_lab.stages import train as train_stage

    cfg = cfg_factory("train", "data=imagefolder", f"data.source.path={meta}", "data.prompts=[a]")
    err = stage_error(train_stage, cfg, capsys)
    assert "error: " in err and "file_name 'link.png' leads outside data.source.path" in err
    assert not list(tmp_path.rglob("done"))


def test_bad_metadata_lines_get_one_sentence(tmp_path):
    folder = tmp_path / "m"
    _image(folder / "a.png")
    _image(folder / "b.png").write_bytes(b"not an image")
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{oops\n')
    with pytest.raises(InfluenceLabError, match="metadata.jsonl line 2 is not valid JSON"):
        load_imagefolder(str(folder))
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "x"}\n{"file_name": "b.png", "text": "y"}\n'
    )
    with pytest.raises(
        InfluenceLabError, match="b.png in data.source.path cannot be read as an image"
    ):
        load_imagefolder(str(folder))


# --- only influence_lab models and loaders are imported from a config ----------------------------


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module that, if ever imported, writes a marker file."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_mod_xyz.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Thing:\n    kind = 'image'\n"
        "def load(**kw):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("evil_mod_xyz", None)


REFUSED = "(a class outside the allowed modules|which is not a GenerativeModel)"


@pytest.mark.parametrize(
    "target",
    [
        "evil_mod_xyz.Thing",
        "os.system",
        "builtins.eval",
        "influence_lab.models.build.Path",
        "influence_lab.models.protocol.GenerativeModel",
        "influence_lab.models.build.torch",
        "influence_lab.store.files.atomic_write",
        "influence_lab.models..VAE",
        "influence_lab.modelsx.VAE",
        "VAE",
    ],
)
def test_model_target_must_be_an_influence_lab_model(
    target, evil_module, cfg_factory, tmp_path, capsys
):
    from influence_lab.models.build import build_model, load_model
    from influence_lab.stages import train as train_stage

    cfg = cfg_factory("train", "data.source.max_items=40")
    bundle = load_data(typed(cfg.data))
    cfg.model._target_ = target
    with pytest.raises(
        InfluenceLabError, match=rf"model._target_ is '{re.escape(target)}', {REFUSED}"
    ):
        build_model(typed(cfg.model), bundle)
    with pytest.raises(SystemExit) as info:
        train_stage.run(cfg)
    assert info.value.code == 2 and re.search(REFUSED, capsys.readouterr().err)
    run_dir = tmp_path / "tampered"
    run_dir.mkdir()
    (run_dir / "model.json").write_text(json.dumps({"target": target, "init": {}}))
    with pytest.raises(
        InfluenceLabError,
        match=rf"the target in .*model.json is .*, {REFUSED}",
    ):
        load_model(run_dir)
    assert not evil_module.exists()


def test_real_model_targets_still_build_and_load(cfg_factory, tmp_path):
    from influence_lab.models.build import build_model, load_model, save_model
    from influence_lab.models.vae import VAE

    cfg = cfg_factory("train", "data.source.max_items=40")
    bundle = load_data(typed(cfg.data))
    for target in ("influence_lab.models.VAE", "influence_lab.models.vae.VAE"):
        cfg.model._target_ = target
        model = build_model(typed(cfg.model), bundle)
        assert isinstance(model, VAE)
    save_model(model, tmp_path)
    assert isinstance(load_model(tmp_path), VAE)


@pytest.mark.parametrize(
    "target",
    [
        "evil_mod_xyz.load",
        "os.system",
        "influence_lab.data.sources.image_dataset",
        "influence_lab.data.sources.np.load",
        "influence_lab.data.dataset.load_data",
        "sklearn.datasets.load_digits",
    ],
)
def test_data_source_target_must_be_an_influence_lab_loader(target, evil_module, cfg_factory):
    cfg = cfg_factory("train")
    cfg.data.source._target_ = target
    with pytest.raises(
        InfluenceLabError,
        match=rf"data.source._target_ is '{re.escape(target)}'; it must be one of "
        r"influence_lab.data.sources.load_digits",
    ):
        load_data(typed(cfg.data))
    assert not evil_module.exists()


# --- config resolvers run no code -----------------------------------------------------------------

CODE = "__import__('pathlib').Path('{marker}').touch()"


def test_no_code_evaluating_resolver_is_registered():
    import importlib

    from influence_lab.entry.stage_entry import SAFE_RESOLVERS
    from influence_lab.stages import STAGES

    for stage in STAGES:
        importlib.import_module(f"influence_lab.stages.{stage}")
    for name in (
        "eval",
        "python",
        "exec",
        "import",
        "call",
        "oc.eval",
        "hydra.utils.instantiate",
        "sh",
    ):
        assert not OmegaConf.has_resolver(name), name
    from omegaconf.basecontainer import BaseContainer

    registered = set(getattr(BaseContainer, "_resolvers", {}))
    assert registered and registered <= set(SAFE_RESOLVERS), registered - set(SAFE_RESOLVERS)
    for path in SRC.rglob("*.py"):
        assert (
            "register_new_resolver" not in path.read_text()
            and "register_resolver" not in path.read_text()
        ), path


@pytest.mark.parametrize("resolver", ["eval", "python", "oc.eval"])
def test_code_interpolations_fail_and_run_nothing(resolver, cfg_factory, tmp_path, capsys):
    from omegaconf.errors import UnsupportedInterpolationType

    from influence_lab.stages import train as train_stage

    marker = tmp_path / f"MARKER-{resolver}"
    expr = CODE.format(marker=marker)
    cfg = cfg_factory("train", f'group=${{{resolver}:"{expr}"}}')
    assert f"${{{resolver}:" in OmegaConf.to_container(cfg, resolve=False)["group"]
    with pytest.raises(UnsupportedInterpolationType):
        OmegaConf.to_container(cfg, resolve=True)
    err = stage_error(train_stage, cfg, capsys)
    assert f"group uses the resolver '{resolver}'" in err and "evaluates no code" in err
    nested = cfg_factory("train", f"data.prompts=[a,'${{oc.select:x,${{{resolver}:1}}}}']")
    with pytest.raises(SystemExit):
        train_stage.run(nested)
    assert f"data.prompts[1] uses the resolver '{resolver}'" in " ".join(
        capsys.readouterr().err.split()
    )
    assert not marker.exists()
    assert not list(tmp_path.rglob("done"))


def test_safe_resolvers_still_work(cfg_factory, monkeypatch):
    from influence_lab.entry.stage_entry import check_resolvers

    monkeypatch.setenv("IL_TEST_GROUP", "from-env")
    cfg = cfg_factory("train", "group=${oc.env:IL_TEST_GROUP}")
    check_resolvers(cfg)
    assert cfg.group == "from-env"


def test_code_interpolation_on_the_command_line_fails(tmp_path):
    marker = tmp_path / "MARKER-cli"
    expr = CODE.format(marker=marker)
    exe = Path(sys.executable).parent / "influence-lab"
    cmd = [
        str(exe),
        "train",
        f'group=${{eval:"{expr}"}}',
        f"paths.output_dir={tmp_path / 'out'}",
        "logger=none",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "group uses the resolver 'eval'" in " ".join(done.stderr.split())
    assert not marker.exists()
    assert not list(tmp_path.rglob("done"))


# --- static checks of the source ------------------------------------------------------------------

# (file relative to src/influence_lab, call) -> why it is allowed
ALLOWED = {
    (
        "cli.py",
        "importlib.import_module",
    ): "imports influence_lab.stages.<stage> after checking stage is in STAGES",
    (
        "models/build.py",
        "importlib.import_module",
    ): "allowed_class imports only modules under influence_lab.models and the config's plugins",
    (
        "evaluation/launch.py",
        "subprocess.Popen",
    ): "an argument list (no shell) running this package's own CLI",
}
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "pickle.load",
    "pickle.loads",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "torch.hub.load",
    "torch.jit.load",
    "os.system",
    "os.popen",
    "instantiate",
    "hydra.utils.instantiate",
    "get_method",
    "get_class",
    "hydra.utils.get_method",
    "hydra.utils.get_class",
    "hydra.utils.call",
    "importlib.import_module",
    "subprocess.Popen",
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "yaml.load",
    "yaml.unsafe_load",
    "marshal.loads",
    "shelve.open",
}


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _const(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def source_findings(root: Path = SRC, conf: Path = SRC.parents[1] / "conf") -> list[str]:
    """Unsafe loads and code execution in the package source and its configs, except ALLOWED."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name == "torch.load" and _const(node, "weights_only") is not True:
                    found.append(f"{where} torch.load without weights_only=True")
                if (
                    name.split(".")[-1] in ("load", "loads")
                    and name.startswith(("np.", "numpy."))
                    and _const(node, "allow_pickle") not in (None, False)
                ):
                    found.append(f"{where} {name} with allow_pickle")
                if (
                    _const(node, "ckpt_path") is not None
                    and _const(node, "weights_only") is not True
                    and (rel, "ckpt_path") not in ALLOWED
                ):
                    found.append(f"{where} {name}(ckpt_path=...) without weights_only=True")
                if any(kw.arg == "trust_remote_code" for kw in node.keywords):
                    found.append(f"{where} {name}(trust_remote_code=...)")
                if any(kw.arg == "shell" for kw in node.keywords):
                    found.append(f"{where} {name}(shell=...)")
                if name in FORBIDDEN_CALLS and (rel, name) not in ALLOWED:
                    found.append(f"{where} {name}(...)")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                )
                for bad in ("pickle", "dill", "cloudpickle", "marshal", "shelve"):
                    if bad in names:
                        found.append(f"{where} imports {bad}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "trust_remote_code" in node.value
            ):
                found.append(f"{where} mentions trust_remote_code in a string")
            elif isinstance(node, ast.Name) and node.id == "trust_remote_code":
                found.append(f"{where} uses trust_remote_code")
    for path in sorted(conf.rglob("*.yaml")):
        if "trust_remote_code" in path.read_text():
            found.append(f"{path.relative_to(conf.parent).as_posix()} sets trust_remote_code")
    return found


def test_source_has_no_unsafe_load_or_code_execution():
    findings = source_findings()
    assert not findings, "\n".join(findings)


def test_static_checks_catch_what_they_look_for(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "bad.yaml").write_text("source:\n  trust_remote_code: true\n")
    (tmp_path / "bad.py").write_text(
        "import pickle\nimport torch, numpy as np, datasets, subprocess\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\n"
        "torch.load('ok.pt', weights_only=True)\n"
        "np.load('x.npy', allow_pickle=True)\ndatasets.load_dataset('x', trust_remote_code=True)\n"
        "eval('1')\nexec('x=1')\npickle.loads(b'')\nsubprocess.run('ls', shell=True)\n"
        "trainer.fit(m, ckpt_path='c')\n"
        "model.eval()\n"
    )
    findings = source_findings(tmp_path, tmp_path / "conf")
    text = "\n".join(findings)
    assert "conf/bad.yaml sets trust_remote_code" in text
    assert text.count("torch.load without weights_only=True") == 2
    for expected in (
        "allow_pickle",
        "trust_remote_code",
        "bad.py:8 eval(",
        "exec(",
        "pickle.loads(",
        "imports pickle",
        "shell=",
        "ckpt_path=...) without weights_only=True",
    ):
        assert expected in text, expected
    assert "bad.py:13" not in text  # model.eval() is a method, not eval()


def test_torch_load_refuses_pickled_code_by_default(tmp_path):
    """What Lightning's checkpoint resume relies on: torch.load without weights_only refuses
    objects."""
    import torch

    marker = tmp_path / "RAN"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"state": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        torch.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_hub_loader_passes_no_remote_code_option(monkeypatch):
    import datasets

    from influence_lab.data.sources import load_hub

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs, args=args)
        return datasets.Dataset.from_dict({"text": ["ab", "cd"], "label": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    ds = load_hub("someone/names", image_column=None, text_column="text", caption_column=None)
    assert len(ds) == 2 and seen["args"] == ("someone/names", None)
    assert "trust_remote_code" not in seen and set(seen) <= {"args", "split"}
