"""The review web app (Starlette, server-rendered pages, one small script for the keyboard; no
front-end build). Routes:

    GET  /join?token=T    an invitation link: sets the session cookie, goes to the tasks (or admin)
    GET  /                resumes at the reviewer's first unfinished task
    GET  /task/N          task N: the prompt, its outputs, the blinded candidates in this
                          reviewer's order, their grades and notes
    POST /task/N          the task's grades, written in one transaction (CSRF-checked)
    GET  /done            every task graded
    GET  /item/C.png      candidate C's training item (only a candidate of this study)
    GET  /output/N/J.png  task N's output J
    GET  /admin           progress per reviewer and task (the admin's token only)

Every page but /join needs the session cookie (HttpOnly, SameSite=Lax) of a valid token; a request
without one is refused (401), a reviewer on the admin page too (403). A POST must declare a body
under MAX_BODY; every response carries HEADERS. The reviewer is the session's, never
a form field, so a reviewer reads and writes only their own judgements. asgi-csrf checks a signed
double-submit token on every POST."""

from __future__ import annotations

import inspect
from importlib.resources import files

import jinja2
from asgi_csrf import asgi_csrf
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..errors import InfluenceLabError
from .access import ADMIN, who
from .database import candidates, secret_of, tasks
from .judgements import GRADES, admin_progress, next_task, progress, record, task_view
from .pictures import StudyContent
from .study import Study

COOKIE = "il_review"
HEADERS = {  # pages and pictures: nothing from elsewhere, no framing, no referrer, no caching
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ASSETS = ("review.css", "review.js")
MAX_BODY = 256 * 1024  # bytes a request body may have (a task's form is a few kB)


def guarded(app):
    """The outermost layer: a POST must declare its length and stay under MAX_BODY (413 or 411
    before anything reads it, CSRF check included), and every response carries HEADERS."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["method"] not in ("GET", "HEAD"):
            length = headers.get(b"content-length")
            status = (
                411
                if length is None or not length.isdigit()
                else (413 if int(length) > MAX_BODY else 0)
            )
            if status:
                response = PlainTextResponse("request body refused", status_code=status)
                response.headers.update(HEADERS)
                return await response(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()
                         if k.lower().encode() not in present]  # fmt: skip
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await app(scope, receive, with_headers)

    return wrapped


def create_app(engine: Engine, study: Study, content: StudyContent) -> Starlette:
    """The ASGI app of one study, wrapped in asgi-csrf (signed with the database's secret)."""
    # autoescape everything: Starlette's default escapes only *.html names, and ours end in .j2
    loader = jinja2.FileSystemLoader(str(files("influence_lab.reviewing") / "templates"))
    templates = Jinja2Templates(env=jinja2.Environment(loader=loader, autoescape=True))
    assets = {name: (files("influence_lab.reviewing") / "templates" / name).read_bytes()
              for name in ASSETS}  # fmt: skip

    def page(request: Request, name: str, status: int = 200, **context) -> Response:
        response = templates.TemplateResponse(
            request, name, {"study": study, "grades": GRADES, **context}, status_code=status
        )
        response.headers.update(HEADERS)
        return response

    def refused(request: Request, status: int, why: str) -> Response:
        return page(request, "refused.html.j2", status=status, why=why)

    def session(request: Request):
        return who(engine, study.id, request.cookies.get(COOKIE))

    def join(request: Request) -> Response:
        token = request.query_params.get("token", "")
        person = who(engine, study.id, token)
        if person is None:
            return refused(request, 403, "This invitation link is not valid (or was replaced).")
        target = "/admin" if person.role == ADMIN else "/"
        response = RedirectResponse(target, status_code=303)
        # Lax, not Strict: a link clicked in webmail is a cross-site navigation, which a Strict
        # cookie would not follow through this redirect; every POST carries the CSRF token
        response.set_cookie(COOKIE, token, httponly=True, samesite="lax", path="/")
        response.headers.update(HEADERS)
        return response

    def reviewer_page(handler):
        """`handler(request, person)` for a reviewer's session; anyone else gets `_gate`."""

        async def page_of(request: Request) -> Response:
            person = session(request)
            if person is None or person.role != "reviewer":
                return _gate(request, person)
            response = handler(request, person)
            return await response if inspect.isawaitable(response) else response

        return page_of

    @reviewer_page
    def home(request: Request, person) -> Response:
        position = next_task(progress(engine, study.id, person.id))
        return RedirectResponse(f"/task/{position}" if position else "/done", status_code=303)

    def _gate(request: Request, person) -> Response:
        if person is None:
            return refused(request, 401, "You need an invitation link to review.")
        if person.role == ADMIN:
            return RedirectResponse("/admin", status_code=303)
        return refused(request, 403, "This page is for the study's admin.")

    def show_task(request: Request, person, position: int, error: str = "", status=200,
                  submitted: dict | None = None):  # fmt: skip
        view = task_view(engine, study.id, person.id, position)
        if view is None:
            return refused(request, 404, f"There is no task {position}.")
        for c in view["candidates"]:  # a refused form comes back as it was sent
            if submitted and c["id"] in submitted:
                c["grade"], c["note"] = submitted[c["id"]]
        items = progress(engine, study.id, person.id)
        outputs = content.outputs[view["target"]]
        return page(
            request,
            "task.html.j2",
            status=status,
            reviewer=person.name,
            task=view,
            tasks=items,
            finished=sum(p.done for p in items),
            kind=content.kind,
            outputs=range(len(outputs)) if content.kind == "image" else outputs,
            item_text=content.items if content.kind == "text" else {},
            csrftoken=request.scope["csrftoken"](),
            error=error,
        )

    @reviewer_page
    def task_get(request: Request, person) -> Response:
        return show_task(request, person, request.path_params["position"])

    @reviewer_page
    async def task_post(request: Request, person) -> Response:
        position = request.path_params["position"]
        view = task_view(engine, study.id, person.id, position)
        if view is None:
            return refused(request, 404, f"There is no task {position}.")
        form = await request.form()
        grades, missing = {}, 0
        for c in view["candidates"]:
            raw = form.get(f"grade_{c['id']}")
            if raw is None or raw == "":
                missing += 1
                continue
            try:
                grade = int(raw)
            except (TypeError, ValueError):  # a file field, or text
                return refused(request, 400, "A grade must be a number.")
            grades[c["id"]] = (grade, str(form.get(f"note_{c['id']}", "")))
        if missing:
            return show_task(
                request, person, position, status=400, submitted=grades,
                error=f"{missing} candidate(s) still need a grade; nothing was saved.",
            )  # fmt: skip
        try:
            record(engine, person.id, view["task_id"], grades)
        except InfluenceLabError as exc:
            return refused(request, 400, str(exc))
        following = next_task(progress(engine, study.id, person.id))
        return RedirectResponse(f"/task/{following}" if following else "/done", status_code=303)

    @reviewer_page
    def done(request: Request, person) -> Response:
        items = progress(engine, study.id, person.id)
        return page(request, "done.html.j2", reviewer=person.name, tasks=items)

    def item_png(request: Request) -> Response:
        if session(request) is None:
            return PlainTextResponse("an invitation is needed", status_code=401)
        with engine.connect() as conn:
            item_id = conn.execute(
                select(candidates.c.item_id)
                .join(tasks, tasks.c.id == candidates.c.task_id)
                .where(
                    candidates.c.id == request.path_params["candidate"],
                    tasks.c.study_id == study.id,
                )
            ).scalar()
        if item_id is None or item_id not in content.items or content.kind != "image":
            return PlainTextResponse("no such item", status_code=404)
        return Response(content.item_png(item_id), media_type="image/png", headers=HEADERS)

    def output_png(request: Request) -> Response:
        if session(request) is None:
            return PlainTextResponse("an invitation is needed", status_code=401)
        with engine.connect() as conn:
            target = conn.execute(
                select(tasks.c.target).where(
                    tasks.c.study_id == study.id,
                    tasks.c.position == request.path_params["position"],
                )
            ).scalar()
        j = request.path_params["j"]
        if target is None or content.kind != "image" or not 0 <= j < len(content.outputs[target]):
            return PlainTextResponse("no such output", status_code=404)
        return Response(content.output_png(target, j), media_type="image/png", headers=HEADERS)

    def admin(request: Request) -> Response:
        person = session(request)
        if person is None or person.role != ADMIN:
            return refused(request, 401 if person is None else 403,
                           "The admin page needs the admin's link.")  # fmt: skip
        table = admin_progress(engine, study.id)
        return page(request, "admin.html.j2", table=table)

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return PlainTextResponse("not found", status_code=404)
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return Response(assets[name], media_type=kind, headers=HEADERS)

    app = Starlette(
        routes=[
            Route("/join", join),
            Route("/", home),
            Route("/task/{position:int}", task_get, methods=["GET"]),
            Route("/task/{position:int}", task_post, methods=["POST"]),
            Route("/done", done),
            Route("/item/{candidate:int}.png", item_png),
            Route("/output/{position:int}/{j:int}.png", output_png),
            Route("/admin", admin),
            Route("/static/{name}", asset),
        ]
    )
    return guarded(asgi_csrf(app, signing_secret=secret_of(engine), cookie_samesite="Strict"))
