"""`influence-lab review [serve | invite NAME | admin | results]`: domain experts grade the training
items this config's attribute run ranked highest (each method's top `review.top_k` per prompt,
pooled, blinded and shuffled per reviewer) in a local web app; the judgements live in a database
(`review.database`: the SQLite file <output_dir>/review/review.sqlite by default, or any SQLAlchemy
URL such as postgresql+psycopg://...).

- `serve` (the default) runs the app on review.host:review.port (127.0.0.1 unless told otherwise);
- `invite NAME` prints NAME's invitation link (a new token; an earlier link of NAME stops working);
- `admin` prints the admin page's link (progress per reviewer and task);
- `results` writes, under <output_dir>/review/<model>-<data>-<attribute signature>/, the
  judgements (judgements.parquet / .csv), the agreement (agreement.csv: Krippendorff's alpha with a
  bootstrap interval over tasks), each method's precision@k and nDCG@k against the experts'
  majority (methods.csv), the same beside the method's LDS and counterfactual effect
  (side_by_side.csv), summary.md; logs them to W&B; the report shows them."""

from __future__ import annotations

import socket

import pandas as pd
from rich.table import Table

from ..data import load_data
from ..entry.stage_entry import (
    console,
    output_dir,
    settings_of,
    stage_entry,
    stage_tracking,
    upstream,
)
from ..errors import InfluenceLabError
from ..reporting.document import table_markdown
from ..reporting.review_summary import review_plot
from ..reporting.sections import newest
from ..reviewing.access import ADMIN, invite, link
from ..reviewing.agreement import agreement, method_scores
from ..reviewing.comparison import side_by_side
from ..reviewing.database import default_url, open_database
from ..reviewing.judgements import judgement_table, rank_table
from ..reviewing.study import Study, open_study
from ..settings import StageSettings, run_name
from ..store.files import RunDir, atomic_write, write_text
from ..store.records import AttributeProvenance, load_outputs
from .attribute import attribute


def review(settings: StageSettings):
    settings = settings_of(settings)
    rv = settings.review
    attributed = attribute(upstream(settings))
    engine = open_database(rv.database or default_url(output_dir(settings)))
    study = open_study(engine, run_name(settings), attributed.path, attributed.signature, rv.top_k)
    if rv.action in ("invite", "admin") and not rv.port:
        raise InfluenceLabError(
            "review.port is 0 (any free port), so an invitation link cannot name it; give the "
            "port the app is served on, e.g. review.port=8765."
        )
    if rv.action == "invite":
        if not rv.reviewer:
            raise InfluenceLabError(
                "review invite needs the reviewer's name: influence-lab review invite NAME."
            )
        token = invite(engine, study.id, rv.reviewer)
        print(f"{rv.reviewer}: {link(base_url(settings), token)}", flush=True)  # stdout: pipeable
        return token
    if rv.action == "admin":
        token = invite(engine, study.id, ADMIN, role=ADMIN)
        print(f"admin: {link(base_url(settings), token)}", flush=True)
        return token
    if rv.action == "results":
        return results(settings, engine, study)
    return serve(settings, engine, study)


def base_url(settings: StageSettings) -> str:
    host = settings.review.host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.review.port}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(settings: StageSettings, engine, study: Study) -> None:
    import uvicorn

    from ..reviewing.app import create_app
    from ..reviewing.pictures import study_content

    rv = settings.review
    bundle = load_data(settings.data)
    provenance = AttributeProvenance.read(study.attribute_dir)
    _, outputs, _ = load_outputs(provenance.generate_dir)
    items = set(rank_table(engine, study.id)["id"])
    app = create_app(engine, study, study_content(bundle, outputs, items))
    port = rv.port or free_port(rv.host)
    settings = settings.replaced({"review.port": port})
    console.print(
        f"review of {study.name} ({len(outputs)} tasks, {len(items)} candidates) on "
        f"{base_url(settings)}\n  invite a reviewer: influence-lab review invite NAME; "
        "the admin page: influence-lab review admin; stop with Ctrl-C",
        highlight=False,
    )
    uvicorn.run(app, host=rv.host, port=port, access_log=False, log_level="warning")


def results(settings: StageSettings, engine, study: Study) -> RunDir:
    rv = settings.review
    judged = judgement_table(engine, study.id)
    if judged.empty:
        raise InfluenceLabError(
            f"no judgements yet in the review of {study.name}-{study.attribute_signature}; "
            "invite reviewers (influence-lab review invite NAME) and serve the app first."
        )
    ranks = rank_table(engine, study.id)
    agreed = agreement(judged, rv.bootstrap, rv.seed)
    methods = method_scores(ranks, judged, study.top_k, rv.min_reviewers, rv.bootstrap, rv.seed)
    root = output_dir(settings)
    name = run_name(settings)
    lds, sweep = newest(root, "lds", name), newest(root, "counterfactual", name)
    compared = side_by_side(
        methods,
        pd.read_csv(lds / "lds.csv") if lds else None,
        pd.read_csv(sweep / "stats.csv") if sweep and (sweep / "stats.csv").exists() else None,
    )
    # the judgements change while a review goes on: every `results` rewrites the folder
    run = RunDir(root, "review", study.name, study.attribute_signature)
    run.prepare(force=True)
    atomic_write(run / "judgements.parquet", lambda p: judged.to_parquet(p, index=False))
    atomic_write(run / "judgements.csv", lambda p: judged.to_csv(p, index=False))
    atomic_write(
        run / "agreement.csv", lambda p: pd.DataFrame([agreed.row()]).to_csv(p, index=False)
    )
    atomic_write(run / "methods.csv", lambda p: methods.to_csv(p, index=False))
    atomic_write(run / "side_by_side.csv", lambda p: compared.to_csv(p, index=False))
    review_plot(compared, run / "experts.png")
    write_text(run / "summary.md", summary_markdown(study, agreed, compared, lds, sweep))
    with stage_tracking(
        settings, run.path, "review", {"attribute_signature": study.attribute_signature,
                                       "top_k": study.top_k, "min_reviewers": rv.min_reviewers},
    ) as tracking:  # fmt: skip
        tracking.summary(
            {
                "alpha": agreed.alpha, "alpha_low": agreed.low, "alpha_high": agreed.high,
                "reviewers": agreed.reviewers, "tasks": agreed.tasks,
                **{f"precision/{r.method}": r.precision for r in methods.itertuples()},
                **{f"ndcg/{r.method}": r.ndcg for r in methods.itertuples()},
            }
        )  # fmt: skip
        tracking.log_frame("side_by_side", compared)
    run.mark_done({"judgements": len(judged)})
    print_results(agreed, compared, study.top_k)
    console.print(f"review results: {run.path}", highlight=False)
    return run


def _interval(value, low, high) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def result_header(k: int) -> list[str]:
    return ["method", f"precision@{k}", f"nDCG@{k}", "tasks", "LDS", "Δ loss vs random"]


def result_rows(compared: pd.DataFrame) -> list[list[str]]:
    """The side-by-side table as text cells: each value with its 95% interval."""
    return [
        [
            r.method,
            _interval(r.precision, r.precision_low, r.precision_high),
            _interval(r.ndcg, r.ndcg_low, r.ndcg_high),
            str(r.tasks),
            _interval(r.lds, r.lds_low, r.lds_high),
            _interval(r.delta_loss_vs_random, r.delta_loss_low, r.delta_loss_high),
        ]
        for r in compared.itertuples()
    ]


def print_results(agreed, compared: pd.DataFrame, k: int) -> None:
    console.print(
        f"agreement (Krippendorff's alpha, ordinal): "
        f"{_interval(agreed.alpha, agreed.low, agreed.high)} "
        f"({agreed.reviewers} reviewers, {agreed.tasks} tasks, {agreed.candidates} candidates; "
        "bootstrap over tasks)",
        highlight=False,
    )
    table = Table(title=f"each method against the experts' majority (top {k})",
                  title_justify="left")  # fmt: skip
    for col in result_header(k):
        table.add_column(col, justify="left" if col == "method" else "right")
    for cells in result_rows(compared):
        table.add_row(*cells)
    console.print(table)


def summary_markdown(study: Study, agreed, compared: pd.DataFrame, lds, sweep) -> str:
    k = study.top_k
    rows, header = result_rows(compared), result_header(k)
    return "\n".join(
        [
            f"# Expert review: {study.name}",
            "",
            f"Agreement between experts (Krippendorff's alpha, ordinal grades): "
            f"{_interval(agreed.alpha, agreed.low, agreed.high)}, {agreed.reviewers} reviewers, "
            f"{agreed.tasks} tasks, {agreed.candidates} candidates (95% bootstrap over tasks).",
            "",
            table_markdown(pd.DataFrame(rows, columns=header)),
            "",
            f"LDS from {lds or 'no lds run'}; counterfactual from {sweep or 'no sweep'}.",
            "",
        ]
    )


run = stage_entry(review)
