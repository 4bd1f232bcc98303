"""The review app in a real browser (Playwright driving the Debian Chromium the report test uses):
a reviewer completes tasks by mouse and by keyboard, a reload resumes where they were, two reviewers
work at once, and a visitor without a valid token is refused."""

from __future__ import annotations

import os

import pytest

from influence_lab.reviewing.access import invite, link
from influence_lab.reviewing.app import create_app
from influence_lab.reviewing.judgements import judgement_table

from .conftest import chromium_path
from .review_helpers import ThreadServer, build

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def served(tmp_path):
    engine, study, content = build(f"sqlite:///{tmp_path / 'review.sqlite'}", tmp_path / "att")
    with ThreadServer(create_app(engine, study, content)) as url:
        yield engine, study, url


def grades_of(engine, study, reviewer: str, task: int) -> dict[int, int]:
    table = judgement_table(engine, study.id)
    mine = table[(table.reviewer == reviewer) & (table.task == task)]
    return dict(zip(mine.candidate, mine.grade, strict=True))


def test_a_reviewer_grades_by_mouse_and_by_keyboard_and_a_reload_resumes(served, browser):
    engine, study, url = served
    context = browser.new_context()
    page = context.new_page()
    page.goto(link(url, invite(engine, study.id, "Ada")))
    assert page.url.endswith("/task/1")
    cards = page.locator(".candidate")
    count = cards.count()
    assert count >= study.top_k
    # by mouse: every candidate "partly", a note on the first, then the button
    for i in range(count):
        cards.nth(i).get_by_label("partly").check()
    cards.nth(0).locator("textarea").fill("the same loop at the top")
    assert page.locator("#graded-count").inner_text() == f"{count} of {count} graded"
    page.click("#save")
    page.wait_for_url("**/task/2")
    assert set(grades_of(engine, study, "Ada", 1).values()) == {1}
    notes = judgement_table(engine, study.id).note
    assert "the same loop at the top" in set(notes)
    # by keyboard: 1 and 3 alternately (each grades the focused card and moves on), Enter saves
    shown = [int(c) for c in page.locator(".candidate").evaluate_all(
        "cs => cs.map(c => c.dataset.candidate)")]  # fmt: skip
    for i in range(len(shown)):
        page.keyboard.press("1" if i % 2 == 0 else "3")
    page.keyboard.press("Enter")
    page.wait_for_url("**/task/3")
    stored = grades_of(engine, study, "Ada", 2)
    assert [stored[c] for c in shown] == [2 if i % 2 == 0 else 0 for i in range(len(shown))]
    # the progress bar and the reload: task 3 of 4, two done
    assert page.locator("#bar").get_attribute("value") == "2"
    page.reload()
    assert page.url.endswith("/task/3")
    page.goto(url + "/")
    assert page.url.endswith("/task/3")
    # a new browser (the same link again) resumes there too, with the old grades kept
    again = browser.new_context().new_page()
    again.goto(link(url, invite(engine, study.id, "Ada")))
    assert again.url.endswith("/task/3")
    again.goto(url + "/task/1")
    assert again.locator("input[type=radio][value='1']:checked").count() == count
    context.close()


def test_two_reviewers_at_once_and_a_visitor_without_a_token(served, browser):
    engine, study, url = served
    pages = []
    for name in ("Ada", "Bob"):
        page = browser.new_context().new_page()
        page.goto(link(url, invite(engine, study.id, name)))
        pages.append(page)
    for position in range(1, 5):  # both on the same task, saving one after the other
        for page, key in zip(pages, ("1", "2"), strict=True):
            for _ in range(page.locator(".candidate").count()):
                page.keyboard.press(key)
        for page in pages:
            page.keyboard.press("Enter")
        for page in pages:
            page.wait_for_url("**/done" if position == 4 else f"**/task/{position + 1}")
    table = judgement_table(engine, study.id)
    assert set(table[table.reviewer == "Ada"].grade) == {2}
    assert set(table[table.reviewer == "Bob"].grade) == {1}
    assert not table.duplicated(["reviewer", "candidate"]).any()
    assert pages[0].locator("#done").is_visible()
    stranger = browser.new_context().new_page()
    response = stranger.goto(url + "/task/1")
    assert response.status == 401 and "invitation" in stranger.locator("#refused").inner_text()
    response = stranger.goto(url + "/join?token=guessed")
    assert response.status == 403
    assert stranger.goto(url + "/item/1.png").status == 401


@pytest.mark.slow
def test_the_command_line_serves_a_study_that_a_reviewer_completes(tmp_path, browser):
    """As the docs say: `influence-lab review invite NAME` prints a link, `influence-lab review`
    serves the study of the config's attribute run (made first here, on a shrunken demo), a
    reviewer completes every task in Chromium, and `review results` prints the agreement."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from .review_helpers import free_port

    cli = str(Path(sys.executable).parent / "influence-lab")
    port = free_port()
    common = [
        f"paths.output_dir={tmp_path}", "logger=csv", "model.fit.max_epochs=3", "generate.m=2",
        "embedders.autoencoder.epochs=3", "review.top_k=2", f"review.port={port}",
        "generate.prompts=[digit zero\\, regular\\, upright,digit seven\\, bold\\, upright]",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    links = []
    for name in ("Ada Lovelace", "Bob"):
        out = subprocess.run([cli, "review", "invite", name, *common], capture_output=True,
                             text=True, env=env, timeout=600)  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        links.append(out.stdout.strip().split(": ", 1)[1])
    assert links[0].startswith(f"http://127.0.0.1:{port}/join?token=")
    server = subprocess.Popen([cli, "review", *common], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                time.sleep(0.2)
        for link_, key in zip(links, ("1", "2"), strict=True):  # clearly, partly
            page = browser.new_context().new_page()
            page.goto(link_)
            assert page.locator("#prompt").inner_text() == "digit zero, regular, upright"
            assert page.locator(".outputs img").count() == 2
            for position in (1, 2):
                for _ in range(page.locator(".candidate").count()):
                    page.keyboard.press(key)
                page.keyboard.press("Enter")
                page.wait_for_url("**/done" if position == 2 else "**/task/2")
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = subprocess.run([cli, "review", "results", *common, "logger=wandb"], capture_output=True,
                         text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Krippendorff's alpha" in out.stderr and "raw_only" in out.stderr
    folder = next((tmp_path / "review").glob("vae-digits-*"))
    import pandas as pd

    judged = pd.read_csv(folder / "judgements.csv")
    assert set(judged.reviewer) == {"Ada Lovelace", "Bob"}
    assert set(judged[judged.reviewer == "Bob"].grade) == {1}
    methods = pd.read_csv(folder / "methods.csv")  # both call every candidate influenced
    assert set(methods.method) == {"paper", "fused", "raw_only"} and (methods.precision == 1).all()
    # the summary run in W&B (offline, read back as `wandb sync` would upload it)
    from .test_tracking import leet_records

    agreement = pd.read_csv(folder / "agreement.csv").iloc[0]
    for run in sorted((tmp_path / "wandb").glob("offline-run-*")):
        records = leet_records(str(run))
        if next(r["run"] for r in records if r.get("type") == "run")["job_type"] == "review":
            break
    summary = {}
    for record in records:
        if record.get("type") == "summary":
            summary.update(record["summary"].get("update", {}))
    assert summary["alpha"] == pytest.approx(agreement.alpha)
    assert summary["reviewers"] == 2 and "precision/raw_only" in summary
