"""Who may open and submit what: every admin route, signed out, per role, and without CSRF.

The table below names each route's area (the API's role matrix, :data:`mailer.auth.MATRIX`);
a test checks that it lists every route the admin serves, so a new page cannot skip these
checks. Refused requests must change nothing: the audit log, which every change writes to,
stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from mailer import auth, schedules, suppress
from mailer.auth import Area
from mailer.models import SmtpServer
from mailer.rendering import Renderer
from mailer.service import Service
from tests.admin.world import ROLES, AdminWorld, make_world

PUBLIC = {("GET", "/admin/login"), ("POST", "/admin/login"), ("GET", "/admin/static/{name}")}
SINK_NAME = "20260101T080000.000000Z-0123abcd"


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    areas: tuple[Area, ...]  # all needed; () = any signed-in user
    also: tuple[str, ...] = ()  # roles allowed besides (an editor watching an alert)

    def allowed(self) -> set[str]:
        ok = {r for r in ROLES if all(auth.allowed(r, a) for a in self.areas)}
        return ok | set(self.also)


S, A, E = Area.STORIES, Area.ALERTS, Area.EDITIONS
ROUTES = [
    Route("GET", "/admin/", ()),
    Route("GET", "/admin/stories", (S,)),
    Route("GET", "/admin/stories/{story_id}", (S,)),
    Route("GET", "/admin/stories/{story_id}/alert", (A,)),
    Route("GET", "/admin/stories/{story_id}/alert/preview.html", (A,)),
    Route("GET", "/admin/editions", (E,)),
    Route("GET", "/admin/editions/{edition_id}", (E,)),
    Route("GET", "/admin/editions/{edition_id}/progress.json", (E,)),
    Route("GET", "/admin/editions/{edition_id}/preview", (E,)),
    Route("GET", "/admin/editions/{edition_id}/email.html", (E,)),
    Route("GET", "/admin/schedules", (Area.SCHEDULES,)),
    Route("GET", "/admin/schedules/{schedule_id}", (Area.SCHEDULES,)),
    Route("GET", "/admin/readers", (Area.SUBSCRIBERS,)),
    Route("GET", "/admin/readers/{reader_id}", (Area.SUBSCRIBERS,)),
    Route("GET", "/admin/suppressions", (Area.SUPPRESSIONS,)),
    Route("GET", "/admin/smtp", (Area.SMTP,)),
    Route("GET", "/admin/tokens", (Area.TOKENS,)),
    Route("GET", "/admin/outbox", (E,)),
    Route("GET", "/admin/outbox/{name}", (E,)),
    Route("GET", "/admin/outbox/{name}/body.html", (E,)),
    Route("GET", "/admin/outbox/{name}/raw", (E,)),
    Route("POST", "/admin/logout", ()),
    Route("POST", "/admin/stories", (S,)),
    Route("POST", "/admin/stories/import", (S,)),
    Route("POST", "/admin/stories/{story_id}/alert/test", (A,)),
    Route("POST", "/admin/stories/{story_id}/alert", (A,)),
    Route("POST", "/admin/editions/digest", (E,)),
    Route("POST", "/admin/editions/{edition_id}/pause", (E,)),
    Route("POST", "/admin/editions/{edition_id}/resume", (E,)),
    Route("POST", "/admin/editions/{edition_id}/cancel", (E,)),
    Route("POST", "/admin/editions/{edition_id}/resend-failed", (E,)),
    Route("POST", "/admin/schedules", (Area.SCHEDULES,)),
    Route("POST", "/admin/schedules/{schedule_id}", (Area.SCHEDULES,)),
    Route("POST", "/admin/schedules/{schedule_id}/pause", (Area.SCHEDULES,)),
    Route("POST", "/admin/schedules/{schedule_id}/resume", (Area.SCHEDULES,)),
    Route("POST", "/admin/schedules/{schedule_id}/remove", (Area.SCHEDULES,)),
    Route("POST", "/admin/readers/{reader_id}/unsubscribe", (Area.SUBSCRIBERS,)),
    Route("POST", "/admin/readers/{reader_id}/suppress", (Area.SUBSCRIBERS, Area.SUPPRESSIONS)),
    Route("POST", "/admin/suppressions", (Area.SUPPRESSIONS,)),
    Route("POST", "/admin/suppressions/{suppression_id}/remove", (Area.SUPPRESSIONS,)),
    Route("POST", "/admin/smtp", (Area.SMTP,)),
    Route("POST", "/admin/smtp/{server_id}", (Area.SMTP,)),
    Route("POST", "/admin/smtp/{server_id}/remove", (Area.SMTP,)),
    Route("POST", "/admin/tokens", (Area.TOKENS,)),
    Route("POST", "/admin/tokens/{token_id}/revoke", (Area.TOKENS,)),
]
#: An editor may watch (not control) the alert they can trigger.
ALERT_WATCH = [
    Route("GET", "/admin/editions/{alert_id}", (E,), also=("editor",)),
    Route("GET", "/admin/editions/{alert_id}/progress.json", (E,), also=("editor",)),
    Route("GET", "/admin/editions/{alert_id}/preview", (E,), also=("editor",)),
    Route("GET", "/admin/editions/{alert_id}/email.html", (E,), also=("editor",)),
]
GETS = [r for r in ROUTES + ALERT_WATCH if r.method == "GET"]
POSTS = [r for r in ROUTES if r.method == "POST"]
GUARDED = [r for r in POSTS if set(ROLES) - r.allowed()]


def walk(routes: list[object], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every API route, through included routers (old and new FastAPI)."""
    for route in routes:
        if isinstance(route, APIRoute):
            for method in route.methods:
                yield method, prefix + route.path
        elif hasattr(route, "original_router"):
            nested = route.original_router.routes
            yield from walk(nested, prefix + route.include_context.prefix)


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory, admin_template: Path) -> Iterator[Access]:
    world = make_world(admin_template, tmp_path_factory.mktemp("access"))
    try:
        yield Access.build(world)
    finally:
        world.close()


@dataclass
class Access:
    world: AdminWorld
    ids: dict[str, str]

    @classmethod
    def build(cls, world: AdminWorld) -> Access:
        world.add_readers(5)
        world.add_readers(3, topics=("syria",), cadence="daily", start=10)
        alerted, quiet = world.add_story("عاجل: خبر أُرسل"), world.add_story("خبر لم يُرسل")
        service = Service(world.engine, world.settings, world.dispatcher, Renderer(world.settings))
        alert = service.trigger_alert(alerted).edition_id
        digest = service.send_digest("syria", "daily").edition_id
        with Session(world.engine) as session:
            schedule = schedules.add_schedule(
                session, topic="syria", cadence="daily", at="07:00", timezone="Asia/Damascus"
            )
            token_id, _ = auth.create_token(session, "editor", "bot")
            server = SmtpServer(name="relay", url="smtp://relay.example.com:25")
            session.add(server)
            session.commit()
            ids = {"schedule_id": schedule.id, "token_id": token_id, "server_id": server.id}
        with world.engine.begin() as conn:
            row, _ = suppress.add_suppression(conn, "gone@example.com", world.settings)
        sink = world.settings.sink_dir
        sink.mkdir(parents=True, exist_ok=True)
        (sink / f"{SINK_NAME}.json").write_text('{"mail_from": "a@example.com", "rcpt_tos": []}')
        (sink / f"{SINK_NAME}.eml").write_bytes(
            b"Subject: hello\r\nFrom: a@example.com\r\nTo: b@example.com\r\n"
            b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n"
        )
        ids |= {
            "story_id": quiet,
            "edition_id": digest,
            "alert_id": alert,
            "reader_id": 1,
            "suppression_id": row.id,
            "name": SINK_NAME,
        }
        world.dispatcher.sent.clear()
        return cls(world, {k: str(v) for k, v in ids.items()})

    def path(self, route: Route) -> str:
        return route.template.format(**self.ids)

    def audit_size(self) -> int:
        return len(self.world.audit())


def test_the_table_lists_every_admin_route(access: Access) -> None:
    served = set(walk(list(access.world.app.routes)))
    listed = {(r.method, r.template) for r in ROUTES} | PUBLIC
    assert served == listed


@pytest.mark.parametrize("route", GETS, ids=lambda r: r.template)
def test_a_page_sends_a_signed_out_visitor_to_sign_in(access: Access, route: Route) -> None:
    path = access.path(route)
    answer = access.world.browser().get(path)
    if path.endswith(".json"):
        assert answer.status_code == 401
    else:
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/admin/login?next={path}"


@pytest.mark.parametrize("route", POSTS, ids=lambda r: r.template)
def test_a_signed_out_form_changes_nothing(access: Access, route: Route) -> None:
    before = access.audit_size()
    answer = access.world.browser().post(access.path(route), data={"csrf_token": "x"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login")
    assert access.audit_size() == before


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", GETS, ids=lambda r: r.template)
def test_pages_follow_the_role_matrix(access: Access, route: Route, role: str) -> None:
    answer = access.world.client(role).get(access.path(route))
    if role in route.allowed():
        assert answer.status_code == 200, answer.text[:500]
    else:
        assert answer.status_code == 403
        if not route.template.endswith(".json"):
            assert "ليست لديك صلاحية" in answer.text


@pytest.mark.parametrize("route", GUARDED, ids=lambda r: r.template)
def test_forms_refuse_a_role_that_may_not_use_them(access: Access, route: Route) -> None:
    refused = [r for r in ROLES if r not in route.allowed()]
    before = access.audit_size()
    for role in refused:
        answer = access.world.post(role, access.path(route), {"topic": "syria", "email": "x@y.z"})
        assert answer.status_code == 403, (role, answer.text[:300])
    assert access.audit_size() == before


@pytest.mark.parametrize("route", POSTS, ids=lambda r: r.template)
def test_forms_refuse_a_missing_or_foreign_csrf_token(access: Access, route: Route) -> None:
    role = next(r for r in ("admin", "operator", "editor") if r in route.allowed())
    other = next(r for r in ROLES if r != role)
    client, path = access.world.client(role), access.path(route)
    before = access.audit_size()
    data = {"topic": "syria", "cadence": "daily", "email": "x@example.com", "title": "t"}
    for token in (None, "", "forged", access.world.token(other)):
        form = data if token is None else data | {"csrf_token": token}
        answer = client.post(path, data=form)
        assert answer.status_code == 403, (token, answer.text[:300])
        assert "انتهت صلاحية النموذج" in answer.text
    assert access.audit_size() == before
    # Still signed in: the refusal did not end the session.
    assert client.get("/admin/").status_code == 200


def test_an_expired_or_forged_session_is_not_a_session(access: Access) -> None:
    browser = access.world.browser()
    browser.cookies.set("mailer_admin", "eyJ1aWQiOjF9.forged.sig", path="/admin")
    assert browser.get("/admin/").status_code == 303
