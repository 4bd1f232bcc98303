"""The review app as a reviewer and an attacker use it, through Starlette's test client: invitation
tokens, blinding, the per-reviewer order, CSRF, one transaction per task, a reviewer confined to
their own judgements, pictures only of the study's own items, and the admin page."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from benchmarks.review_load import task_form
from influence_lab.errors import InfluenceLabError
from influence_lab.reviewing.access import ADMIN, invite
from influence_lab.reviewing.app import COOKIE, create_app
from influence_lab.reviewing.database import judgements, meta, open_database
from influence_lab.reviewing.judgements import judgement_table, rank_table, task_view

from .review_helpers import METHODS, build


@pytest.fixture
def review(tmp_path):
    engine, study, content = build(f"sqlite:///{tmp_path / 'review.sqlite'}", tmp_path / "att")
    app = create_app(engine, study, content)
    return engine, study, app


def joined(app, engine, study, name: str, role: str = "reviewer") -> TestClient:
    client = TestClient(app, follow_redirects=False)
    token = invite(engine, study.id, name, role)
    response = client.get(f"/join?token={token}")
    assert response.status_code == 303 and COOKIE in response.cookies
    return client


def form_of(client: TestClient, position: int) -> tuple[str, list[int], str]:
    page = client.get(f"/task/{position}")
    assert page.status_code == 200
    token, ids = task_form(page.text)
    return token, ids, page.text


def submit(client, position, token, ids, grade=2, note=""):
    data = {"csrftoken": token}
    data.update({f"grade_{i}": str(grade) for i in ids})
    data.update({f"note_{i}": note for i in ids})
    return client.post(f"/task/{position}", data=data)


def stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(judgements)).scalar()


def test_no_token_is_refused_and_a_bad_token_too(review):
    engine, study, app = review
    client = TestClient(app, follow_redirects=False)
    for path in ("/", "/task/1", "/done", "/admin", "/item/1.png", "/output/1/0.png"):
        assert client.get(path).status_code == 401, path
    assert client.get("/join?token=not-a-token").status_code == 403
    assert client.post("/task/1", data={"grade_1": "2"}).status_code in (401, 403)
    assert stored(engine) == 0


def test_a_task_is_blinded_and_each_reviewer_has_an_own_stable_order(review):
    engine, study, app = review
    ada, bob = joined(app, engine, study, "Ada"), joined(app, engine, study, "Bob")
    _, ada_ids, html = form_of(ada, 1)
    _, again, _ = form_of(ada, 1)
    _, bob_ids, _ = form_of(bob, 1)
    pool = rank_table(engine, study.id)
    assert sorted(ada_ids) == sorted(set(pool[pool.task == 1].candidate))  # duplicates merged
    assert len(ada_ids) == len(set(ada_ids))
    assert ada_ids == again and ada_ids != bob_ids and sorted(ada_ids) == sorted(bob_ids)
    for method in METHODS:  # no method name, no rank, no score, no item id on the page
        assert method not in html
    assert "score" not in html.lower() and "item-0" not in html


def test_grades_are_stored_once_in_one_transaction_and_resubmitting_updates(review):
    engine, study, app = review
    ada = joined(app, engine, study, "Ada")
    token, ids, _ = form_of(ada, 1)
    partial = {"csrftoken": token, f"grade_{ids[0]}": "2"}
    response = ada.post("/task/1", data=partial)
    assert response.status_code == 400 and "still need a grade" in response.text
    assert stored(engine) == 0  # nothing of a task is saved until all of it is
    response = submit(ada, 1, token, ids, grade=1, note="same stripes")
    assert response.status_code == 303 and response.headers["location"] == "/task/2"
    assert stored(engine) == len(ids)
    submit(ada, 1, token, ids, grade=0)  # a repeated submission (double click, retry)
    table = judgement_table(engine, study.id)
    assert stored(engine) == len(ids) and set(table.grade) == {0}
    assert ada.get("/", follow_redirects=False).headers["location"] == "/task/2"  # resumes


def test_a_post_without_the_csrf_token_is_refused(review):
    engine, study, app = review
    ada = joined(app, engine, study, "Ada")
    token, ids, _ = form_of(ada, 1)
    assert submit(ada, 1, "forged", ids).status_code == 403
    data = {f"grade_{i}": "2" for i in ids}
    assert ada.post("/task/1", data=data).status_code == 403
    assert stored(engine) == 0
    assert submit(ada, 1, token, ids).status_code == 303


def test_a_reviewer_reads_and_writes_only_their_own_judgements(review):
    engine, study, app = review
    ada, bob = joined(app, engine, study, "Ada"), joined(app, engine, study, "Bob")
    token, ids, _ = form_of(ada, 1)
    submit(ada, 1, token, ids, grade=2, note="ada's note")
    _, _, bob_page = form_of(bob, 1)
    assert "ada&#39;s note" not in bob_page and "ada's note" not in bob_page
    assert "checked" not in bob_page
    # Bob names Ada's reviewer id in the form: the session decides who writes
    bob_token, bob_ids, _ = form_of(bob, 1)
    data = {"csrftoken": bob_token, "reviewer_id": "1", "reviewer": "Ada"}
    data.update({f"grade_{i}": "0" for i in bob_ids})
    assert bob.post("/task/1", data=data).status_code == 303
    table = judgement_table(engine, study.id)
    assert set(table[table.reviewer == "Ada"].grade) == {2}
    assert set(table[table.reviewer == "Bob"].grade) == {0}
    # a candidate of another task posted into task 1 is refused, nothing written
    _, task2_ids, _ = form_of(bob, 2)
    data = {"csrftoken": bob_token, **{f"grade_{i}": "1" for i in bob_ids}}
    before = stored(engine)
    assert bob.post("/task/1", data={**data, f"grade_{task2_ids[0]}": "1"}).status_code == 303
    assert stored(engine) == before  # the foreign field is ignored: only task 1's were updated
    assert bob.post("/task/1", data={**data, f"grade_{bob_ids[0]}": "7"}).status_code == 400


def test_pictures_come_only_from_the_studys_own_items(review, tmp_path):
    engine, study, app = review
    ada = joined(app, engine, study, "Ada")
    _, ids, _ = form_of(ada, 1)
    picture = ada.get(f"/item/{ids[0]}.png")
    assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert ada.get("/output/1/0.png").content[:4] == b"\x89PNG"
    # another study's candidate in the same database is not served by this study's app
    other_engine, other, _ = build(str(engine.url), tmp_path / "other", signature="other0001")
    pool = rank_table(engine, other.id)
    assert ada.get(f"/item/{int(pool.candidate.iloc[0])}.png").status_code == 404
    for path in (
        "/item/..%2F..%2Fetc%2Fpasswd.png", "/item/%2Fetc%2Fpasswd", "/output/1/99.png",
        "/output/99/0.png", "/static/..%2Freview.py", "/static/app.py",
    ):  # fmt: skip
        assert ada.get(path).status_code == 404, path


def test_the_admin_sees_progress_and_a_reviewer_does_not(review):
    engine, study, app = review
    ada = joined(app, engine, study, "Ada")
    token, ids, _ = form_of(ada, 1)
    submit(ada, 1, token, ids)
    assert ada.get("/admin").status_code == 403
    admin = joined(app, engine, study, ADMIN, role=ADMIN)
    page = admin.get("/admin")
    assert page.status_code == 200 and "Ada" in page.text
    assert f"{len(ids)}/{len(ids)}" in page.text and "1/4 tasks" in page.text
    assert admin.get("/task/1", follow_redirects=False).status_code == 303  # to /admin
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_a_new_invitation_replaces_the_old_link(review):
    engine, study, app = review
    old = invite(engine, study.id, "Ada")
    new = invite(engine, study.id, "Ada")
    client = TestClient(app, follow_redirects=False)
    assert client.get(f"/join?token={old}").status_code == 403
    assert client.get(f"/join?token={new}").status_code == 303


def test_another_schema_version_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="99"))
    with pytest.raises(InfluenceLabError, match="schema version 99"):
        open_database(url)


def test_the_view_holds_no_method_and_the_ranks_every_method(review):
    engine, study, _ = review
    view = task_view(engine, study.id, 1, 1)
    assert set(view["candidates"][0]) == {"id", "item_id", "caption", "grade", "note"}
    ranks = rank_table(engine, study.id)
    assert set(ranks.method) == set(METHODS) and ranks["rank"].max() == study.top_k
    assert (ranks.groupby(["task", "method"]).size() == study.top_k).all()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_reviewers_at_once_store_every_judgement_once(backend, tmp_path, request):
    """Two reviewers submit every task at the same time, each twice (a retry): every judgement is
    in the database exactly once, in SQLite and in PostgreSQL."""
    from concurrent.futures import ThreadPoolExecutor

    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path / 'r.sqlite'}"
    )
    engine, study, content = build(url, tmp_path / "att")
    app = create_app(engine, study, content)
    clients = [joined(app, engine, study, name) for name in ("Ada", "Bob")]

    def work(client):
        total = 0
        for position in range(1, 5):
            token, ids, _ = form_of(client, position)
            for _ in range(2):
                assert submit(client, position, token, ids).status_code == 303
            total += len(ids)
        return total

    with ThreadPoolExecutor(2) as pool:
        expected = sum(pool.map(work, clients))
    assert engine.dialect.name == backend
    assert stored(engine) == expected
    table = judgement_table(engine, study.id)
    assert not table.duplicated(["reviewer", "candidate"]).any()


def test_a_text_study_shows_texts_and_serves_no_pictures(tmp_path):
    """Names (a text model): the outputs and candidates are shown as text, escaped; there are no
    pictures to serve."""
    from influence_lab.reviewing.pictures import StudyContent

    engine, study, _ = build(f"sqlite:///{tmp_path / 'r.sqlite'}", tmp_path / "att")
    items = {f"item-{i:03d}": f"NAME{i}<b>" for i in range(30)}
    content = StudyContent("text", items, [["ANNA", "<script>x</script>"]] * 4)
    app = create_app(engine, study, content)
    client = joined(app, engine, study, "Ada")
    page = client.get("/task/1").text
    assert "<code>ANNA</code>" in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x</script>" not in page and "&lt;b&gt;" in page
    shown = re.findall(r'<code class="item-text">NAME(\d+)&lt;b&gt;</code>', page)
    pool = rank_table(engine, study.id)
    assert sorted(f"item-{int(i):03d}" for i in shown) == sorted(set(pool[pool.task == 1].id))
    _, ids, _ = form_of(client, 1)
    assert client.get(f"/item/{ids[0]}.png").status_code == 404
    assert client.get("/output/1/0.png").status_code == 404


def test_a_note_and_a_caption_come_back_escaped(tmp_path):
    """A note (typed by a reviewer) and a caption (from the data) are shown as text, never as
    markup."""
    import pandas as pd

    folder = tmp_path / "att"
    from .review_helpers import fake_attribute_run

    fake_attribute_run(folder)
    table = pd.read_parquet(folder / "attribution.parquet")
    table["caption"] = '<img src=x onerror="alert(1)">'
    table.to_parquet(folder / "attribution.parquet", index=False)
    engine, study, content = build(f"sqlite:///{tmp_path / 'r.sqlite'}", folder)
    client = joined(create_app(engine, study, content), engine, study, "Ada")
    token, ids, page = form_of(client, 1)
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    submit(client, 1, token, ids, note="</textarea><script>alert(2)</script>")
    page = client.get("/task/1").text
    assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)" in page


def test_a_forged_session_a_huge_body_and_a_refused_form(review):
    """A valid CSRF token with a made-up session cookie is refused; a body over the limit or of no
    declared length is refused before anything reads it; a form refused for a missing grade comes
    back with the grades that were sent; redirects carry the security headers too."""
    from influence_lab.reviewing.app import MAX_BODY

    engine, study, app = review
    ada = joined(app, engine, study, "Ada")
    token, ids, _ = form_of(ada, 1)
    forger = TestClient(app, follow_redirects=False)
    forger.cookies.set(COOKIE, "made-up")
    forger.cookies.set("csrftoken", ada.cookies.get("csrftoken"))
    data = {"csrftoken": token, **{f"grade_{i}": "2" for i in ids}}
    assert forger.post("/task/1", data=data).status_code == 401
    assert forger.get("/task/1").status_code == 401
    big = ada.post("/task/1", content=b"x" * (MAX_BODY + 1),
                   headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert big.status_code == 413
    chunked = ada.post("/task/1", content=iter([b"a=1"]),
                       headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert chunked.status_code == 411
    assert stored(engine) == 0
    partial = {"csrftoken": token, f"grade_{ids[0]}": "0", f"note_{ids[0]}": "kept"}
    page = ada.post("/task/1", data=partial)
    assert page.status_code == 400 and "kept" in page.text
    assert re.search(rf'name="grade_{ids[0]}" value="0" checked', page.text)
    redirect = submit(ada, 1, token, ids)
    assert redirect.status_code == 303 and redirect.headers["x-frame-options"] == "DENY"
    joined_again = TestClient(app, follow_redirects=False).get(
        f"/join?token={invite(engine, study.id, 'Bob')}"
    )
    cookie = joined_again.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
