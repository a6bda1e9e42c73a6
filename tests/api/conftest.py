"""The JSON API over a real SQLite file (PostgreSQL where a test asks for it), in-process.

Batches the API would queue are recorded by a :class:`MemoryDispatcher` and sent in-process by
the real :class:`EditionSender` over a :class:`MemoryTransport`, so a test can watch an edition
go from planned to sent without a broker or worker processes.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailer import api
from mailer.auth import create_token
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import AuditEvent, Delivery, Subscriber
from mailer.sending import BatchReport, EditionSender
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from mailer.transport import MemoryTransport
from tests.support.smtp_server import ScriptedSMTPServer
from tests.support.stack import create_pg_database, drop_pg_database, need_service

ROLES = ("editor", "operator", "admin")


def api_settings(tmp: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": database_url,
        "base_url": "https://news.example.com",
        "secret_keys": "test-secret",
        "hash_key": "test-hash-key",
        "dispatcher": "mailer.dispatch:NullDispatcher",
        "alert_batch_size": 4,
        "digest_batch_size": 4,
        "claim_chunk": 3,
        "max_attempts": 3,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    settings: Settings
    engine: Engine
    dispatcher: MemoryDispatcher
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    transport: MemoryTransport = field(default_factory=MemoryTransport)

    def headers(self, role: str) -> dict[str, str]:
        if role not in self.tokens:
            with Session(self.engine) as session:
                _, self.tokens[role] = create_token(session, role, f"{role}-bot")
                session.commit()
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> Any:
        return self.client.request(method, f"/api/v1{path}", headers=self.headers(role), **kwargs)

    # -- content ---------------------------------------------------------------------------

    def add_readers(
        self,
        count: int,
        *,
        topics: tuple[str, ...] = ("breaking",),
        cadence: str = "instant",
        start: int = 1,
        name: str = "",
    ) -> list[str]:
        rows = [
            ReaderRow(
                line=i,
                email=f"reader{i:04d}@example.com",
                name=name,
                topics=topics,
                cadence=cadence,
            )
            for i in range(start, start + count)
        ]
        report = import_readers(self.engine, rows, self.settings, consented=True)
        assert not report.errors, report.errors
        return [row.email for row in rows]

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

    # -- sending ---------------------------------------------------------------------------

    def sender(self, transport: MemoryTransport | None = None) -> EditionSender:
        return EditionSender(self.settings, self.engine, transport or self.transport)

    def drain(self, transport: MemoryTransport | None = None) -> list[BatchReport]:
        """Send every batch queued so far, as workers would."""
        taken = list(self.dispatcher.sent)
        self.dispatcher.sent.clear()
        sender = self.sender(transport)
        return [sender.send_batch(batch) for _, batch in taken]

    # -- observing -------------------------------------------------------------------------

    def statuses(self, edition_id: int) -> Counter[str]:
        with Session(self.engine) as session:
            rows = session.scalars(select(Delivery.status).where(Delivery.edition_id == edition_id))
            return Counter(rows)

    def recipients(self, edition_id: int) -> Counter[str]:
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.edition_id == edition_id)
            )
            return Counter(str(r) for r in rows)

    def audit(self) -> list[AuditEvent]:
        with Session(self.engine) as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def sent_to(transport: MemoryTransport) -> Counter[str]:
    return Counter(recipient for _, recipient, _ in transport.sent)


def copy_database(template: Path, path: Path) -> None:
    with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database with the topics, copied for every test (migrating is slow)."""
    path = tmp_path_factory.mktemp("api-template") / "mailer.db"
    upgrade(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    engine.dispose()
    return path


def make_world(settings: Settings) -> World:
    engine = make_engine(settings.database)
    dispatcher = MemoryDispatcher()
    app = FastAPI()
    app.include_router(api.router(settings, engine, dispatcher=dispatcher), prefix="/api/v1")
    app.include_router(api.metrics_router(settings, engine))
    return World(settings, engine, dispatcher, TestClient(app))


@pytest.fixture
def world(tmp_path: Path, migrated: Path) -> Iterator[World]:
    copy_database(migrated, tmp_path / "mailer.db")
    built = make_world(api_settings(tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}"))
    try:
        yield built
    finally:
        built.client.close()
        built.engine.dispose()


@pytest.fixture
def smtp() -> Iterator[ScriptedSMTPServer]:
    with ScriptedSMTPServer() as server:
        yield server


@pytest.fixture
def smtp_world(tmp_path: Path, migrated: Path, smtp: ScriptedSMTPServer) -> Iterator[World]:
    """A world whose test sends go to a real SMTP server over TCP."""
    copy_database(migrated, tmp_path / "mailer.db")
    settings = api_settings(
        tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}", smtp_url=f"{smtp.url}?timeout=5"
    )
    built = make_world(settings)
    try:
        yield built
    finally:
        built.client.close()
        built.engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_world(
    request: pytest.FixtureRequest, tmp_path: Path, migrated: Path
) -> Iterator[World]:
    """The same world on an SQLite file or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        copy_database(migrated, tmp_path / "mailer.db")
        url = f"sqlite:///{tmp_path / 'mailer.db'}"
    else:
        created: list[str] = []
        need_service("PostgreSQL", lambda: created.append(create_pg_database()))
        url = created[0]
        upgrade(url)
        engine = make_engine(url)
        with Session(engine) as session:
            ensure_topics(session)
            session.commit()
        engine.dispose()
    built = make_world(api_settings(tmp_path, url))
    try:
        yield built
    finally:
        built.client.close()
        built.engine.dispose()
        if request.param == "postgres":
            drop_pg_database(url)
