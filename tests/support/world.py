"""A delivery world on a real SQLite file, for fast tests of the sending logic.

Batches that ``Service`` would have queued are taken from a :class:`MemoryDispatcher` and sent
in-process by :class:`EditionSender`; time is a clock the test moves.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from mailer import editions
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import Batch, MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import Delivery, Edition, Subscriber, Suppression
from mailer.rendering import Renderer
from mailer.sending import BatchReport, EditionSender
from mailer.service import Service
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from mailer.sweeper import sweep
from mailer.transport import MemoryTransport, Outcome, SendResult, Transport

ACCEPTED = SendResult(Outcome.SENT, 250, "2.0.0 OK", "2.0.0")
TEMPORARY = SendResult.from_reply(451, "4.3.0 try again later")
HARD_BOUNCE = SendResult.from_reply(550, "5.1.1 user unknown")
PERMANENT = SendResult.from_reply(554, "5.7.1 message rejected by policy")


class Clock:
    """A clock the test moves by hand (starts at the real time: planning stamps real times)."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> datetime:
        self.moment += timedelta(seconds=seconds)
        return self.moment

    def set(self, moment: datetime) -> datetime:
        self.moment = moment
        return moment


class WorkerKilled(BaseException):
    """Escapes ``except Exception`` like SIGKILL would: nothing is released or recorded."""


@dataclass
class World:
    settings: Settings
    engine: Engine
    dispatcher: MemoryDispatcher
    service: Service
    clock: Clock
    transports: list[MemoryTransport] = field(default_factory=list)

    # -- content -----------------------------------------------------------------------------

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

    def add_story(
        self,
        title: str = "عاجل: اختبار",
        *,
        topic: str = "syria",
        breaking: bool = True,
        published_at: datetime | None = None,
    ) -> int:
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(
                    title=title,
                    url=f"https://news.example.com/{uuid.uuid4().hex}",
                    topic=topic,
                    summary="ملخص الخبر",
                    body_html="<p>نص</p>",
                    is_breaking=breaking,
                    published_at=published_at,
                ),
            )
            session.commit()
            return story.id

    # -- sending -----------------------------------------------------------------------------

    def sender(self, transport: Transport | None = None) -> EditionSender:
        transport = transport or MemoryTransport()
        if isinstance(transport, MemoryTransport):
            self.transports.append(transport)
        return EditionSender(
            self.settings, self.engine, transport, now=self.clock, jitter=lambda: 0.5
        )

    def take_batches(self) -> list[tuple[str, Batch]]:
        taken = list(self.dispatcher.sent)
        self.dispatcher.sent.clear()
        return taken

    def drain(self, sender: EditionSender) -> list[BatchReport]:
        """Send every batch queued so far (what the workers would do with the broker's)."""
        return [sender.send_batch(batch) for _, batch in self.take_batches()]

    def sweep(self) -> Any:
        return sweep(self.engine, self.settings, self.dispatcher, now=self.clock)

    # -- observing ---------------------------------------------------------------------------

    def deliveries(self, edition_id: int) -> list[Delivery]:
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(Delivery).where(Delivery.edition_id == edition_id).order_by(Delivery.id)
                )
            )

    def by_email(self, edition_id: int) -> dict[str, Delivery]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(Subscriber.email, Delivery)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.edition_id == edition_id)
            ).all()
            return {str(email): delivery for email, delivery in rows}

    def edition(self, edition_id: int) -> Edition:
        with Session(self.engine) as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            return edition

    def finish(self, edition_id: int) -> bool:
        with Session(self.engine) as session, session.begin():
            return editions.finish_if_done(session, edition_id, self.clock)

    def subscriber_status(self, email: str) -> str:
        with Session(self.engine) as session:
            status = session.scalar(select(Subscriber.status).where(Subscriber.email == email))
            assert status is not None
            return status

    def set_subscriber_status(self, email: str, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Subscriber).where(Subscriber.email == email).values(status=status))

    def suppressions(self) -> list[Suppression]:
        with Session(self.engine) as session:
            return list(session.scalars(select(Suppression)))


def sent_to(*transports: MemoryTransport) -> Counter[str]:
    return Counter(recipient for t in transports for _, recipient, _ in t.sent)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database with the topics, copied for every test (migrating is slow)."""
    path = tmp_path_factory.mktemp("template") / "mailer.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    engine.dispose()
    return path


def world_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    """Small batches and chunks, long leases and retries: the test moves the clock."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        base_url="https://news.example.com",
        secret_keys="test-secret",
        hash_key="test-hash-key",
        alert_batch_size=4,
        digest_batch_size=4,
        claim_chunk=3,
        lease_seconds=150.0,
        retry_base_seconds=60.0,
        retry_max_seconds=3600.0,
        max_attempts=3,
        max_age_seconds=86400.0,
        stall_seconds=60.0,
    )
    return settings.model_copy(update=overrides)


def make_world(tmp_path: Path, migrated_template: Path, **overrides: Any) -> Iterator[World]:
    path = tmp_path / "mailer.db"
    with closing(sqlite3.connect(migrated_template)) as src, closing(sqlite3.connect(path)) as dst:
        src.backup(dst)
    settings = world_settings(tmp_path, f"sqlite:///{path}", **overrides)
    engine = make_engine(settings.database)
    dispatcher = MemoryDispatcher()
    service = Service(engine, settings, dispatcher, Renderer(settings))
    try:
        yield World(settings, engine, dispatcher, service, Clock())
    finally:
        engine.dispose()
