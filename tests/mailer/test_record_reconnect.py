"""A message the SMTP server accepted is recorded even when the database connection that was
to record it dies right then (a PostgreSQL restart, a killed backend): without the record the
sweeper would send it again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session

from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.stories import ensure_topics
from mailer.transport import MemoryTransport, SendResult
from tests.support.stack import create_pg_database, drop_pg_database, need_service, pg_admin_url
from tests.support.world import Clock, World, world_settings


@pytest.fixture
def pg_world(tmp_path: Path) -> Iterator[World]:
    need_service("PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close())
    url = create_pg_database()
    settings = world_settings(tmp_path, url, alert_batch_size=20, claim_chunk=5)
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    dispatcher = MemoryDispatcher()
    try:
        yield World(
            settings,
            engine,
            dispatcher,
            Service(engine, settings, dispatcher, Renderer(settings)),
            Clock(),
        )
    finally:
        engine.dispose()
        drop_pg_database(url)


class CutAfterAccepting(MemoryTransport):
    """Accepts every message; right after accepting the ``at``-th, terminates every other
    backend of the database, as a restart would: the connection holding the chunk is gone."""

    def __init__(self, database: str, at: int) -> None:
        super().__init__()
        self.database, self.at = database, at

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        result = super().send(sender, recipient, data, smtputf8=smtputf8)
        if len(self.sent) == self.at:
            with psycopg.connect(pg_admin_url(), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                )
        return result


def test_the_accepted_message_is_recorded_on_a_new_connection_and_sent_once(
    pg_world: World,
) -> None:
    world = pg_world
    world.add_readers(20)
    started = world.service.trigger_alert(world.add_story())
    transport = CutAfterAccepting(world.settings.database.rsplit("/", 1)[1], at=7)
    sender = world.sender(transport)

    world.drain(sender)  # no exception escapes: the record was written on a new connection

    copies = Counter(recipient for _, recipient, _ in transport.sent)
    assert len(copies) == 20 and set(copies.values()) == {1}
    rows = world.deliveries(started.edition_id)
    assert {row.status for row in rows} == {"sent"}
    seventh = transport.sent[6][1]
    assert world.by_email(started.edition_id)[seventh].message_id is not None
