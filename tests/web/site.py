"""A reader-facing site for tests: the reader routes over FastAPI's TestClient, a database
(SQLite file, or a fresh PostgreSQL database), an in-memory dispatcher and transport.

Messages the routes queue are delivered by :meth:`Site.deliver`, which calls
:func:`mailer.transactional.send_message` the way the Celery task does; what a reader would
find in their mailbox is :meth:`Site.inbox`.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import transactional
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import Subscriber, Subscription, Topic
from mailer.ratelimit import MemoryLimiter
from mailer.stories import ensure_topics
from mailer.subscribers import ReaderRow, import_readers
from mailer.transport import MemoryTransport
from mailer.web import readers
from tests.support.stack import create_pg_database, drop_pg_database, need_service

BASE = "https://testserver"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings_for(tmp: Path, database_url: str = "", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": database_url,
        "base_url": BASE,
        "secret_keys": "k1",
        "hash_key": "hash-key",
        "subscribe_limit_per_ip": "1000/hour",
        "subscribe_limit_per_address": "1000/hour",
        "wake_linger_seconds": 0,  # wake-ups dispatched in the request: tests read them at once
    }
    return Settings(**(values | overrides))


class Site:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        upgrade(settings.database)
        self.engine = make_engine(settings.database)
        with Session(self.engine) as session:
            ensure_topics(session)
            session.commit()
        self.dispatcher = MemoryDispatcher()
        self.transport = MemoryTransport()
        self.app = self.make_app(settings)

    def make_app(self, settings: Settings) -> FastAPI:
        """The reader routes as configured by ``settings`` (another key list, say)."""
        app = FastAPI()
        app.include_router(
            readers.router(
                settings, self.engine, dispatcher=self.dispatcher, limiter=MemoryLimiter()
            )
        )
        return app

    def browser(self, app: FastAPI | None = None) -> TestClient:
        """A browser of its own (its own cookie jar)."""
        return TestClient(app or self.app, base_url=BASE)

    # -- acting as a reader ------------------------------------------------------------------

    @staticmethod
    def csrf(page: Response) -> str:
        match = CSRF.search(page.text)
        assert match, page.text
        return match.group(1)

    def subscribe(
        self,
        address: str,
        *,
        topics: tuple[str, ...] = ("breaking",),
        cadence: str = "instant",
        name: str = "",
        client: TestClient | None = None,
        **extra: str,
    ) -> Response:
        client = client or self.browser()
        token = self.csrf(client.get("/subscribe"))
        form = {"csrf_token": token, "email": address, "name": name, "cadence": cadence}
        return client.post("/subscribe", data=form | {"topics": list(topics)} | extra)

    def press(self, url: str, client: TestClient | None = None, **form: str) -> Response:
        """Open a page with a form, as a browser does, and press its (first) button."""
        client = client or self.browser()
        path = url.removeprefix(BASE)
        page = client.get(path)
        assert page.status_code == 200, page.text
        return client.post(path, data={"csrf_token": self.csrf(page)} | form)

    def add_readers(self, *addresses: str, topics: tuple[str, ...] = ("breaking",)) -> None:
        rows = [ReaderRow(line=i, email=a, topics=topics) for i, a in enumerate(addresses, 1)]
        report = import_readers(self.engine, rows, self.settings, consented=True)
        assert not report.errors, report.errors

    # -- the mailbox ---------------------------------------------------------------------------

    def deliver(self) -> list[str]:
        """Send every dispatched message; their statuses."""
        queued, self.dispatcher.messages[:] = list(self.dispatcher.messages), []
        return [
            str(transactional.send_message(self.engine, self.settings, self.transport, i))
            for _, i in queued
        ]

    def inbox(self, address: str) -> list[EmailMessage]:
        self.deliver()
        return [
            email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[misc]
            for _, rcpt, data in self.transport.sent
            if rcpt.lower() == address.lower()
        ]

    def link(self, address: str, kind: str) -> str:
        """The newest ``/confirm/``, ``/preferences/`` or ``/unsubscribe/`` link mailed to
        ``address`` (from the text part, as a reader would copy it)."""
        for message in reversed(self.inbox(address)):
            text = message.get_body(("plain",))
            assert text is not None
            found = re.findall(rf"{re.escape(BASE)}/{kind}/\S+", text.get_content())
            if found:
                return str(found[-1])
        raise AssertionError(f"no {kind} link mailed to {address}")

    # -- the database ------------------------------------------------------------------------

    def reader(self, address: str) -> Subscriber | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalar(select(Subscriber).where(Subscriber.email == address))

    def subscriptions(self, address: str) -> set[tuple[str, str]]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(Topic.slug, Subscription.cadence)
                .join(Subscription.topic)
                .join(Subscriber)
                .where(Subscriber.email == address)
            ).all()
        return {(slug, cadence) for slug, cadence in rows}


def pg_url() -> str:
    """A fresh PostgreSQL database (skips without one; fails under CI=true)."""
    import psycopg

    from tests.support.stack import pg_admin_url

    need_service("PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close())
    return create_pg_database()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    built = Site(settings_for(tmp_path))
    yield built
    built.engine.dispose()


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[Site]:
    url = pg_url()
    built = Site(settings_for(tmp_path, url))
    try:
        yield built
    finally:
        built.engine.dispose()
        drop_pg_database(url)
