"""The report stage: one self-contained HTML page and a markdown twin; rendered in headless
Chromium."""

import base64
import io
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from influence_lab.evaluation.statistics import arm_table, compare
from influence_lab.reporting.figures import image_grid
from influence_lab.reporting.sections import counterfactual_finding
from influence_lab.reporting.sweep_summary import bar_chart
from influence_lab.stages import report as report_stage
from influence_lab.stages.attribute import attribute
from influence_lab.stages.lds import lds
from influence_lab.stages.report import report
from influence_lab.store.files import RunDir
from tests.conftest import chromium_path, run_cli

PRESET = [
    "data.source.max_items=200",
    "generate.m=2",
    "embedders.autoencoder.epochs=2",
    "attribution.keep=20",
    "attribution.gradient.proj_dim=256",
    "attribution.methods=[raw_only,fused]",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
]
LDS = [
    "lds.subsets=5",
    "lds.seeds=[1]",
    "lds.pack_size=5",
    "lds.trak_ensembles=[1]",
    "lds.track_items=2",
    "lds.memorization_top=4",
]


def _sweep_results(tmp_path):
    """A finished counterfactual result in the format the counterfactual stage writes."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(6):
        for seed in (1, 2):
            for arm, base in (("topk", 0.6), ("random", 0.1), ("none", 0.3)):
                rows.append(
                    {
                        "method": "fused" if arm == "topk" else "control",
                        "arm": arm,
                        "k": 10,
                        "metric": "delta_loss",
                        "target": t,
                        "seed": seed,
                        "value": base + 0.05 * rng.normal(),
                    }
                )
    table = pd.DataFrame(rows)
    run = RunDir(tmp_path, "counterfactual", "vae-digits", "abc")
    run.prepare()
    compare(table).to_csv(run / "stats.csv", index=False)
    arm_table(table).to_csv(run / "arms.csv", index=False)
    bar_chart(compare(table), run / "chart.png")
    (run / "config.yaml").write_text("model:\n  name: vae\n")
    # what the sweep draws per prompt: the full model's outputs and the retrained models' (rows)
    images = np.random.default_rng(1).random((3, 2, 1, 8, 8))
    rows = ["the full model", "without fused's top-10 (seed 1)", "without 10 random items"]
    image_grid(images, rows, run / "regenerated" / "000-digit-zero-regular-upright.png")
    run.mark_done()


@pytest.fixture
def report_dir(cfg_factory, tmp_path):
    attribute(cfg_factory("attribute", *PRESET))
    lds(cfg_factory("lds", *PRESET, *LDS))
    _sweep_results(tmp_path)
    return report(cfg_factory("report")).parent


def test_report_is_self_contained_with_every_section(report_dir):
    html = (report_dir / "report.html").read_text()
    for title in (
        "Finding",
        "Counterfactual retraining",
        "Linear datamodeling score",
        "Outputs after retraining",
        "Attribution",
        "Sources",
    ):
        assert f">{title}</h2>" in html
    # the prompt's neighbour grid (what fused would remove) beside its outputs after retraining
    assert "000-digit-zero-regular-upright-fused | 000-digit-zero-regular-upright" in html
    assert "Removing fused&#39;s top 10 raised the loss on the original outputs" in html
    assert "more than every control (random and none" in html
    assert "Highest LDS:" in html
    assert html.count("<table") >= 4
    # the long tables and the secondary pictures are folded; numbers to 3 significant digits
    folded = re.findall(r"<details><summary>(.*?)</summary>", html)
    assert {"the numbers of the plot", "the top 3 items per prompt and method"} <= set(folded)
    cells = re.findall(r"<td>(-?\d+\.\d+)</td>", html)
    assert cells and all(len(c.lstrip("-0.").replace(".", "")) <= 3 for c in cells), cells[:20]
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 5  # forest plot, lds bars, memorization, dynamics, neighbour grids
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100
    assert not re.search(r'(src|href)="(http|//)', html)  # nothing fetched from the network
    md = (report_dir / "report.md").read_text()
    assert "## Linear datamodeling score" in md and "| method | LDS | 95% interval |" in md
    linked = re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", md)
    assert len(linked) == len(images) and all((report_dir / p).exists() for p in linked)


def test_report_without_results_is_a_clear_error(cfg_factory, capsys):
    with pytest.raises(SystemExit):
        report_stage.run(cfg_factory("report"))
    assert (
        "no finished attribute, counterfactual or lds results for vae-digits"
        in capsys.readouterr().err
    )


MAX_HEIGHT = 3600  # px at 1200 px wide, folded parts closed: about four screens


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    browser = chromium_path()
    page = (report_dir / "report.html").resolve().as_uri()
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*args, f"--screenshot={shot}", f"--window-size=1200,{2 * MAX_HEIGHT}", page],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2 * MAX_HEIGHT, 1200)
    assert (
        pixels.std() > 20 and (pixels < 128).mean() > 0.01
    )  # not blank: text, tables and pictures
    # the page as a reader first sees it (folded parts closed) ends within MAX_HEIGHT pixels
    height = int(np.flatnonzero((pixels < 250).any(axis=1))[-1]) + 1
    print(f"report height at 1200 px wide: {height} px")
    assert 800 < height <= MAX_HEIGHT
    dom = subprocess.run(
        [*args, "--dump-dom", page], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<table") >= 4 and "Linear datamodeling score" in dom
    html = (report_dir / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert dom.count("<img") == len(uris) >= 5
    for data in uris:  # every picture decodes to a real image
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        assert min(image.size) > 50


@pytest.mark.slow
def test_paper_unlearning_small_preset_regenerates_its_folder(tmp_path):
    """The experiment's one command on the small preset: runs, tables and the README block."""
    folder = tmp_path / "experiments" / "paper_unlearning_small"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(
        "# x\n\n<!-- results:start -->\nSTALE-BLOCK-TEXT\n<!-- results:end -->\n\nend\n"
    )
    args = [
        "pipeline",
        "+experiment=paper_unlearning_small",
        f"paths.output_dir={tmp_path}",
        "logger=none",
        "trainer.progress_bar=false",
        "model.fit.max_epochs=3",
        "embedders.autoencoder.epochs=2",
    ]
    done = run_cli(*args, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = pd.read_csv(folder / "vae-digits" / "stats.csv")
    assert set(stats.control) == {"random_pool", "random", "none"}
    assert {"delta_loss", "ref_drop_model", "ref_drop_autoencoder"} <= set(stats.metric)
    exp = pd.read_csv(folder / "vae-digits" / "experiments.csv")
    assert sorted(exp.experiment.unique()) == [0, 1] and (exp.prompts == 3).all()
    assert set(exp.arm) == {"topk", "random_pool", "random", "none"}
    # each level recomputed from the sweep's rows: per prompt the mean over seeds, then the mean
    # over the experiment's prompts (groups of 3 consecutive prompts)
    rows = pd.read_parquet(next(tmp_path.glob("counterfactual/vae-digits-*/results.parquet")))
    for r in exp[exp.space == "model"].itertuples():
        for when in ("before", "after"):
            part = rows[
                (rows.method == r.method)
                & (rows.arm == r.arm)
                & (rows.group == r.experiment)
                & (rows.metric == f"ref_{when}_model")
            ]
            assert part.target.nunique() == 3
            hand = part.groupby("target")["value"].mean().mean()
            assert getattr(r, f"{when}_mean") == pytest.approx(hand, abs=1e-12)
    assert (folder / "vae-digits" / "chart.png").stat().st_size > 2000
    assert (folder / "vae-digits" / "forest.png").stat().st_size > 2000
    assert "![vae-digits](vae-digits/forest.png)" in (folder / "RESULTS.md").read_text()
    pictures = list((folder / "vae-digits").glob("regenerated-000-*.png"))
    assert len(pictures) == 1 and pictures[0].stat().st_size > 3000
    assert f"(vae-digits/{pictures[0].name})" in (folder / "RESULTS.md").read_text()
    results = (folder / "RESULTS.md").read_text()
    readme = (folder / "README.md").read_text()
    assert (
        "## vae-digits" in results
        and "STALE-BLOCK-TEXT" not in readme
        and "## vae-digits" in readme
    )
    assert "| fused | 2 | " in results and "| fused | mean | " in results  # the paper's table
    assert readme.endswith("<!-- results:end -->\n\nend\n")


def test_finding_states_the_papers_measure_against_each_control():
    """With the paper's measure in the sweep, the finding says for it, too, which controls top-k
    beats."""

    def row(metric, control, topk, low):
        return {
            "method": "fused",
            "k": 10,
            "metric": metric,
            "control": control,
            "topk_mean": topk,
            "control_mean": 0.0,
            "mean_diff": topk,
            "ci_low": low,
            "ci_high": low + 0.1,
            "verdict": "above" if low > 0 else "no clear difference",
            "n_units": 10,
        }

    stats = pd.DataFrame(
        [
            row("delta_loss", "random", 0.72, 0.1),
            row("delta_loss", "none", 0.72, 0.05),
            row("drop_raw", "random", 0.3, 0.1),
            row("ref_drop_model", "random", 0.001, -0.003),
            row("ref_drop_model", "none", 0.001, 0.02),
        ]
    )
    text = counterfactual_finding(stats)
    assert (
        "Removing fused's top 10 raised the loss on the original outputs by 0.72, more than every "
        "control (random and none)."
    ) in text
    assert (
        "the paper's measure, in the model's latent space) by 0.001, more than none; not "
        "clearly differently from random."
    ) in text
    assert "drop_raw" not in text  # only the finding metrics are spoken of
    # statistics written before the analysis over units are not read as findings
    old = counterfactual_finding(stats.drop(columns=["verdict", "n_units"]))
    assert "predate the analysis over independent units" in old and "raised" not in old
    lowered = counterfactual_finding(stats.assign(topk_mean=-0.143))
    assert "top 10 lowered the loss on the original outputs by 0.143" in lowered
    assert "top 10 raised the similarity of the outputs" in lowered
    assert counterfactual_finding(stats[stats.metric == "drop_raw"]).startswith(
        "Removing fused's top 10 changed drop_raw by 0.3"
    )


def test_paper_table_has_the_papers_format():
    """Per experiment (from 1) and space: mean ± std [min, max] before and after, then a row of
    means."""
    from influence_lab.reporting.exports import paper_table

    rows = []
    for experiment in (0, 1):
        for space, base in (("model", 0.5), ("autoencoder", 0.9)):
            for arm in ("topk", "random"):
                rows.append(
                    {
                        "method": "fused" if arm == "topk" else "control",
                        "arm": arm,
                        "k": 10,
                        "experiment": experiment,
                        "space": space,
                        "before_mean": base + experiment / 10,
                        "before_std": 0.01,
                        "before_min": base - 0.1,
                        "before_max": base + 0.2,
                        "after_mean": base - 0.05,
                        "after_std": 0.02,
                        "after_min": 0.0,
                        "after_max": 1.0,
                        "prompts": 15,
                    }
                )
    table = paper_table(pd.DataFrame(rows))
    assert list(table.experiment) == ["1", "2", "mean"] and set(table.method) == {"fused"}
    first = table.iloc[0]
    assert first["before (model)"] == "0.500 ± 0.010 [0.400, 0.700]"
    assert first["after (autoencoder)"] == "0.850 ± 0.020 [0.000, 1.000]"
    assert (
        table.iloc[2]["before (model)"] == "0.550"
        and table.iloc[2]["after (autoencoder)"] == "0.850"
    )


def test_report_stage_loads_neither_torch_nor_lightning(report_dir):
    """`influence-lab report` reads saved results only: it starts in about a second, not the
    several seconds torch and Lightning take to import (docs/performance.md)."""
    from tests.test_startup import imported

    root = report_dir.parent.parent
    (report_dir / "report.html").unlink()
    heavy = imported(["report", f"paths.output_dir={root}"], root)
    assert not {"torch", "pytorch_lightning", "lightning"} & {m.split(".")[0] for m in heavy}
    assert "Finding" in (report_dir / "report.html").read_text()  # the whole report, written
