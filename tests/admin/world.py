"""The admin UI over FastAPI's TestClient, an SQLite file, an in-memory queue and transport.

Users of every role exist from the start (made once per test session: argon2 is slow on
purpose). :meth:`AdminWorld.client` gives a browser of its own signed in as a role by the
real session code; the sign-in form itself is exercised by the tests that are about it.
Batches the admin queues are sent by :meth:`AdminWorld.drain` with the real
:class:`~mailer.sending.EditionSender`, as a worker would.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from httpx import Response as HttpResponse
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailer import admin
from mailer.admin.session import COOKIE, Sessions
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import AuditEvent, Delivery, User
from mailer.ratelimit import MemoryLimiter
from mailer.sending import BatchReport, EditionSender
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from mailer.tokens import Tokens
from mailer.transport import MemoryTransport
from mailer.users import create_user

BASE = "https://testserver"
ROLES = ("editor", "operator", "admin")
PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_template(path: Path) -> None:
    """A migrated database with the topics and one user per role (named after the role)."""
    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        ensure_topics(session)
        for role in ROLES:
            create_user(session, role, PASSWORD, role)
        session.commit()
    engine.dispose()


def copy_database(template: Path, path: Path) -> None:
    with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)


def admin_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": f"sqlite:///{tmp / 'mailer.db'}",
        "base_url": "https://news.example.com",
        "secret_keys": "test-secret",
        "hash_key": "test-hash-key",
        "alert_batch_size": 50,
        "digest_batch_size": 50,
    }
    return Settings(**(values | overrides))


@dataclass
class AdminWorld:
    settings: Settings
    engine: Engine
    dispatcher: MemoryDispatcher = field(default_factory=MemoryDispatcher)
    transport: MemoryTransport = field(default_factory=MemoryTransport)
    limiter: MemoryLimiter = field(default_factory=MemoryLimiter)
    app: FastAPI = field(init=False)
    _clients: dict[str, TestClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app = FastAPI()
        router = admin.router(
            self.settings,
            self.engine,
            dispatcher=self.dispatcher,
            transport_factory=lambda: self.transport,
            limiter=self.limiter,
        )
        self.app.include_router(router, prefix="/admin")

    # -- browsers ----------------------------------------------------------------------------

    def browser(self) -> TestClient:
        """A browser with no session (its own cookie jar)."""
        return TestClient(self.app, base_url=BASE, follow_redirects=False)

    def client(self, role: str) -> TestClient:
        """A browser signed in as the user named ``role`` (one per role and world)."""
        if role not in self._clients:
            with Session(self.engine) as session:
                user = session.scalars(select(User).where(User.username == role)).one()
                request = Request(
                    {
                        "type": "http",
                        "scheme": "https",
                        "server": ("testserver", 443),
                        "path": "/",
                        "query_string": b"",
                        "headers": [],
                    }
                )
                response = Response()
                Sessions(self.settings, self.engine, Tokens(self.settings)).start(
                    request, response, user
                )
            browser = self.browser()
            cookie = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
            browser.cookies.set(COOKIE, cookie, path="/admin")
            self._clients[role] = browser
        return self._clients[role]

    def token(self, role: str) -> str:
        """The CSRF token of ``role``'s session, as every page's forms carry it."""
        return csrf_of(self.client(role).get("/admin/"))

    def post(
        self, role: str, path: str, data: dict[str, Any] | None = None, **kwargs: Any
    ) -> HttpResponse:
        """Submit a form as ``role``, with the session's CSRF token."""
        form = {"csrf_token": self.token(role)} | (data or {})
        return self.client(role).post(path, data=form, **kwargs)

    # -- content -----------------------------------------------------------------------------

    def add_story(self, title: str = "عاجل: اختبار", topic: str = "syria") -> int:
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(
                    title=title,
                    url=f"https://news.example.com/{uuid.uuid4().hex}",
                    topic=topic,
                    summary="ملخص الخبر",
                    is_breaking=True,
                ),
            )
            session.commit()
            return story.id

    def add_readers(
        self,
        count: int,
        *,
        topics: tuple[str, ...] = ("breaking",),
        cadence: str = "instant",
        start: int = 1,
    ) -> list[str]:
        rows = [
            ReaderRow(line=i, email=f"reader{i:04d}@example.com", topics=topics, cadence=cadence)
            for i in range(start, start + count)
        ]
        report = import_readers(self.engine, rows, self.settings, consented=True)
        assert not report.errors, report.errors
        return [row.email for row in rows]

    # -- sending and observing ---------------------------------------------------------------

    def drain(self) -> list[BatchReport]:
        """Send every batch queued so far, as workers would."""
        taken, self.dispatcher.sent[:] = list(self.dispatcher.sent), []
        sender = EditionSender(self.settings, self.engine, self.transport)
        return [sender.send_batch(batch) for _, batch in taken]

    def statuses(self, edition_id: int) -> dict[str, int]:
        with Session(self.engine) as session:
            found: dict[str, int] = {}
            for status in session.scalars(
                select(Delivery.status).where(Delivery.edition_id == edition_id)
            ):
                found[status] = found.get(status, 0) + 1
            return found

    def audit(self) -> list[tuple[str, str, str]]:
        with Session(self.engine) as session:
            return [
                (e.actor, e.action, e.target)
                for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            ]

    def close(self) -> None:
        for browser in self._clients.values():
            browser.close()
        self.engine.dispose()


def csrf_of(page: HttpResponse) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:2000]
    return match.group(1)


def make_world(template: Path, tmp: Path, **overrides: Any) -> AdminWorld:
    copy_database(template, tmp / "mailer.db")
    settings = admin_settings(tmp, **overrides)
    return AdminWorld(settings, make_engine(settings.database))
