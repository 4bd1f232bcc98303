"""`influence-lab review` as a user runs it: the attribute run of the config becomes a study,
`invite` and `admin` print links whose tokens work, `results` refuses an empty review and then
writes the agreement, each method's precision@k and nDCG@k and the side-by-side table, logs a
summary, and the report shows the experts' section."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from starlette.testclient import TestClient

from influence_lab.cli import review_overrides
from influence_lab.errors import InfluenceLabError
from influence_lab.reviewing.access import who
from influence_lab.reviewing.database import default_url, open_database
from influence_lab.reviewing.judgements import GRADE_VALUES, record, task_view
from influence_lab.reviewing.study import open_study
from influence_lab.settings import from_config

SMALL = [
    "generate.m=2",
    "embedders.autoencoder.epochs=3",
    "attribution.keep=20",
    "attribution.methods=[fused,raw_only]",
    "counterfactual.methods=[fused]",
    "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
    "review.top_k=3",
    "review.bootstrap=200",
]


def test_review_stage_invites_scores_and_reports(cfg_factory, tmp_path, capsys):
    from influence_lab.stages.report import report
    from influence_lab.stages.review import review

    token = review(cfg_factory("review", *SMALL, "review.action=invite", "review.reviewer=Ada"))
    out = capsys.readouterr().out
    assert out.startswith("Ada: http://127.0.0.1:8765/join?token=") and token in out
    admin = review(cfg_factory("review", *SMALL, "review.action=admin"))
    engine = open_database(default_url(tmp_path))
    assert (tmp_path / "review" / "review.sqlite").exists()
    with pytest.raises(InfluenceLabError, match="no judgements yet"):
        review(cfg_factory("review", *SMALL, "review.action=results"))
    # the study: 2 prompts, each method's top 3 pooled
    settings = from_config(cfg_factory("review", *SMALL))
    attribute_dir = next((tmp_path / "attribute").glob("vae-digits-*"))
    study = open_study(engine, "vae-digits", attribute_dir, attribute_dir.name[-10:], 3)
    assert who(engine, study.id, token).name == "Ada"
    assert who(engine, study.id, admin).role == "admin"
    assert settings.review.host == "127.0.0.1"  # bound to this machine unless told otherwise
    table = pd.read_parquet(attribute_dir / "attribution.parquet")
    for position in (1, 2):
        view = task_view(engine, study.id, 1, position)
        top = table[(table.target == position - 1) & (table["rank"] <= 3)]
        assert {c["item_id"] for c in view["candidates"]} == set(top.id)
    # two reviewers grade: Ada calls fused's picks influenced, Bob agrees on all but one
    for reviewer, name in ((1, "Ada"), (None, "Bob")):
        if reviewer is None:
            review(cfg_factory("review", *SMALL, "review.action=invite", "review.reviewer=Bob"))
            reviewer = 3
        for position in (1, 2):
            view = task_view(engine, study.id, reviewer, position)
            fused = set(table[(table.target == position - 1) & (table.method == "fused")
                              & (table["rank"] <= 3)].id)  # fmt: skip
            grades = {c["id"]: (2 if c["item_id"] in fused else 0, "") for c in view["candidates"]}
            if name == "Bob" and position == 2:
                first = view["candidates"][0]["id"]
                grades[first] = (1, "unsure")
            record(engine, reviewer, view["task_id"], grades)
    run = review(cfg_factory("review", *SMALL, "review.action=results"))
    printed = capsys.readouterr().err
    assert "Krippendorff" in printed and "precision@3" in printed
    methods = pd.read_csv(run / "methods.csv").set_index("method")
    assert methods.loc["fused", "precision"] == 1.0  # both reviewers: every fused pick influenced
    assert methods.loc["fused", "precision"] >= methods.loc["raw_only", "precision"]
    assert methods.loc["fused", "ndcg"] <= 1.0 and (methods.tasks == 2).all()
    agreement = pd.read_csv(run / "agreement.csv").iloc[0]
    assert agreement.reviewers == 2 and agreement.tasks == 2 and 0.5 < agreement.alpha <= 1
    judged = pd.read_parquet(run / "judgements.parquet")
    assert set(judged.grade) <= set(GRADE_VALUES) and len(judged) == 2 * judged.candidate.nunique()
    side = pd.read_csv(run / "side_by_side.csv")
    assert list(side.method) == ["fused", "raw_only"] and side.lds.isna().all()
    assert (run / "experts.png").stat().st_size > 5000 and run.done
    assert json.loads((run / "done").read_text())["judgements"] == len(judged)
    html = report(cfg_factory("report")).read_text()
    assert "Experts&#39; review" in html or "Experts' review" in html
    assert "agreement (Krippendorff" in html or "Krippendorff" in html


def test_the_app_serves_the_stage_study(cfg_factory, tmp_path):
    from influence_lab.reviewing.app import create_app
    from influence_lab.reviewing.pictures import study_content
    from influence_lab.stages.review import review

    token = review(cfg_factory("review", *SMALL, "review.action=invite", "review.reviewer=Ada"))
    from influence_lab.data import load_data
    from influence_lab.store.records import load_outputs

    settings = from_config(cfg_factory("review", *SMALL))
    engine = open_database(default_url(tmp_path))
    attribute_dir = next((tmp_path / "attribute").glob("vae-digits-*"))
    study = open_study(engine, "vae-digits", attribute_dir, attribute_dir.name[-10:], 3)
    generate_dir = next((tmp_path / "generate").glob("vae-digits-*"))
    _, outputs, _ = load_outputs(generate_dir)
    items = {c["item_id"] for p in (1, 2) for c in task_view(engine, study.id, 1, p)["candidates"]}
    content = study_content(load_data(settings.data), outputs, items)
    client = TestClient(create_app(engine, study, content), follow_redirects=False)
    assert client.get(f"/join?token={token}").status_code == 303
    page = client.get("/task/1")
    assert "digit zero, regular, upright" in page.text and page.text.count('class="candidate"') >= 3
    assert client.get("/output/1/1.png").content[:4] == b"\x89PNG"
    assert client.get("/output/1/2.png").status_code == 404  # generate.m=2


def test_the_command_line_words_become_overrides():
    assert review_overrides(["invite", "Ada Lovelace", "seed=1"]) == [
        "review.action=invite", "review.reviewer='Ada Lovelace'", "seed=1"
    ]  # fmt: skip
    assert review_overrides(["results"]) == ["review.action=results"]
    assert review_overrides(["review.port=9000"]) == ["review.port=9000"]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for name in ("O'Hara", "Ada Lovelace", "名前 #1"):
        override = review_overrides(["invite", name])[1]
        assert parser.parse_override(override).value() == name
    with pytest.raises(SystemExit):
        review_overrides(["invite", "seed=1"])


def test_bad_review_settings_are_one_sentence(cfg_factory):
    for override, words in (
        ("review.action=delete", "allowed values are serve, invite, admin, results"),
        ("review.port=70000", "TCP port"),
        ("review.top_k=0", "positive integer"),
        ("review.reviewer=a\\b", "without a backslash"),
    ):
        with pytest.raises(InfluenceLabError, match=words):
            from_config(cfg_factory("review", override))


def test_results_of_a_young_study_and_invitations_need_a_port(cfg_factory, tmp_path):
    """One reviewer so far: `results` writes its tables (no method scored yet) and a picture that
    says so, instead of failing; an invitation cannot name port 0."""
    from influence_lab.stages.review import review

    review(cfg_factory("review", *SMALL, "review.action=invite", "review.reviewer=Ada"))
    engine = open_database(default_url(tmp_path))
    attribute_dir = next((tmp_path / "attribute").glob("vae-digits-*"))
    study = open_study(engine, "vae-digits", attribute_dir, attribute_dir.name[-10:], 3)
    view = task_view(engine, study.id, 1, 1)
    record(engine, 1, view["task_id"], {c["id"]: (2, "") for c in view["candidates"]})
    run = review(cfg_factory("review", *SMALL, "review.action=results"))
    assert pd.read_csv(run / "methods.csv").empty
    assert (run / "experts.png").exists() and run.done
    with pytest.raises(InfluenceLabError, match="port is 0"):
        review(cfg_factory("review", *SMALL, "review.action=invite", "review.reviewer=B",
                           "review.port=0"))  # fmt: skip
