"""Transactional messages (confirmation, welcome): claim, send, record, retry, sweep, forget."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from mailer import transactional, transactional_mail
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import Subscriber, Subscription, Suppression, TransactionalMessage
from mailer.rendering import RenderedEmail, Renderer
from mailer.signup import Consent, SubscribeRequest, subscribe
from mailer.stories import ensure_topics
from mailer.subscribers import ReaderRow, import_readers
from mailer.transport import MemoryTransport, SendResult

TEMPORARY = SendResult.from_reply(451, "4.3.0 try again later")
PERMANENT = SendResult.from_reply(554, "5.7.1 rejected by policy")
HARD_BOUNCE = SendResult.from_reply(550, "5.1.1 user unknown")


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


class CountingRenderer(Renderer):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.renders: list[str] = []

    def render(self, name: str, context: Any) -> RenderedEmail:
        self.renders.append(name)
        return super().render(name, context)


@dataclass
class World:
    settings: Settings
    engine: Engine
    transport: MemoryTransport
    clock: Clock
    renderer: CountingRenderer

    def pending(self, address: str) -> int:
        """A reader who subscribed on the web; the id of their queued confirmation."""
        done = subscribe(
            self.engine,
            self.settings,
            SubscribeRequest(address, "", ("breaking",), "instant", Consent("192.0.2.1", "ua")),
            now=self.clock,
        )
        assert done.message_id is not None
        return done.message_id

    def send(self, message_id: int) -> str | None:
        return transactional.send_message(
            self.engine,
            self.settings,
            self.transport,
            message_id,
            renderer=self.renderer,
            now=self.clock,
        )

    def row(self, message_id: int) -> TransactionalMessage:
        with Session(self.engine, expire_on_commit=False) as session:
            found = session.get(TransactionalMessage, message_id)
            assert found is not None
            return found

    def sweep(self) -> list[tuple[str, int]]:
        woken = MemoryDispatcher()
        transactional.sweep(self.engine, self.settings, woken, now=self.clock)
        return woken.messages


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path,
        base_url="https://news.example.com",
        secret_keys="k1",
        hash_key="h1",
        max_attempts=3,
        retry_base_seconds=60,
        retry_max_seconds=600,
        stall_seconds=60,
    )
    upgrade(settings.database)
    engine = make_engine(settings.database)
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    yield World(settings, engine, MemoryTransport(), Clock(), CountingRenderer(settings))
    engine.dispose()


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def test_a_message_is_sent_once_with_a_deterministic_message_id(world: World) -> None:
    message_id = world.pending("amal@example.com")
    assert world.send(message_id) == "sent"
    assert world.send(message_id) is None  # a replayed wake-up sends nothing
    ((sender, rcpt, data),) = world.transport.sent
    message = parsed(data)
    row = world.row(message_id)
    expected = transactional_mail.message_id_for(world.settings, message_id)
    assert row.status == "sent" and row.message_id == expected == message["Message-ID"]
    assert expected.startswith(f"<t{message_id}.") and expected.endswith("@example.com>")
    assert rcpt == "amal@example.com" and message["To"] == "amal@example.com"
    # A confirmation is neither an alert nor bulk mail.
    assert message["Precedence"] is None and message["Auto-Submitted"] is None
    # Its bounce comes back to an address naming the message, not some delivery.
    local = sender.split("@")[0]
    assert transactional_mail.parse_verp(world.settings, local) == message_id
    forged = f"bounces+t{message_id}-{'0' * 12}"
    assert transactional_mail.parse_verp(world.settings, forged) is None
    assert transactional_mail.parse_verp(world.settings, f"bounces+{message_id}-abc") is None
    text = message.get_body(("plain",))
    assert text is not None and "https://news.example.com/confirm/" in text.get_content()


def test_each_kind_is_rendered_once_per_process(world: World) -> None:
    ids = [world.pending(f"r{i}@example.com") for i in range(3)]
    for message_id in ids:
        world.send(message_id)
    assert world.renderer.renders == ["confirmation"]
    links = {parsed(d).get_body(("plain",)).get_content() for _, _, d in world.transport.sent}  # type: ignore[union-attr]
    assert len(links) == 3  # each carries its own confirm link


def test_temporary_failures_are_deferred_then_retried_then_given_up(world: World) -> None:
    message_id = world.pending("amal@example.com")
    world.transport.script = {"amal@example.com": TEMPORARY}
    assert world.send(message_id) == "deferred"
    row = world.row(message_id)
    assert row.next_attempt_at is not None and row.next_attempt_at > world.clock()
    assert world.sweep() == []  # not due yet
    world.clock.advance(700)
    assert world.sweep() == [("alerts", message_id)]
    assert world.send(message_id) == "deferred"
    world.clock.advance(700)
    world.sweep()
    assert world.send(message_id) == "failed"  # the third attempt was the last
    row = world.row(message_id)
    assert row.attempts == 3 and "gave up after 3 attempts" in (row.last_response or "")
    world.clock.advance(3600)
    assert world.sweep() == []


def test_a_retry_after_a_temporary_failure_succeeds(world: World) -> None:
    message_id = world.pending("amal@example.com")
    world.transport.script = {"amal@example.com": TEMPORARY}
    world.send(message_id)
    world.transport.script = None
    world.clock.advance(700)
    world.sweep()
    assert world.send(message_id) == "sent"
    assert len(world.transport.sent) == 1


def test_permanent_failure_and_hard_bounce(world: World) -> None:
    first, second = world.pending("policy@example.com"), world.pending("gone@example.com")
    world.transport.script = {"policy@example.com": PERMANENT, "gone@example.com": HARD_BOUNCE}
    assert world.send(first) == "failed" and world.send(second) == "failed"
    with Session(world.engine) as session:
        suppressed = set(session.scalars(select(Suppression.email)))
        statuses = dict(session.execute(select(Subscriber.email, Subscriber.status)).all())
    assert suppressed == {"gone@example.com"}
    assert statuses == {"policy@example.com": "pending", "gone@example.com": "bounced"}
    # A bounced address asking again gets nothing queued at all.
    again = subscribe(
        world.engine,
        world.settings,
        SubscribeRequest("gone@example.com", "", ("breaking",), "instant", Consent(None, None)),
    )
    assert again.message_id is None


def test_a_message_no_longer_wanted_is_skipped(world: World) -> None:
    confirmed_meanwhile = world.pending("amal@example.com")
    with world.engine.begin() as conn:
        conn.execute(update(Subscriber).values(status="active"))
    assert world.send(confirmed_meanwhile) == "failed"
    assert "skipped" in (world.row(confirmed_meanwhile).last_response or "")
    forgotten = world.pending("badr@example.com")
    with world.engine.begin() as conn:
        conn.execute(Subscriber.__table__.delete().where(Subscriber.email == "badr@example.com"))
    assert world.send(forgotten) == "failed"
    assert world.transport.attempts == []


def test_the_sweeper_takes_back_expired_leases_and_wakes_lost_messages(world: World) -> None:
    lost = world.pending("lost@example.com")  # its wake-up never reached a worker
    assert world.sweep() == []  # woken at enqueue: give the broker stall_seconds
    world.clock.advance(61)
    assert world.sweep() == [("alerts", lost)]
    assert world.sweep() == []  # woken again: not once per tick
    world.clock.advance(61)
    assert world.sweep() == [("alerts", lost)]

    killed = world.pending("killed@example.com")
    with world.engine.begin() as conn:  # a worker claimed it and died
        conn.execute(
            update(TransactionalMessage)
            .where(TransactionalMessage.id == killed)
            .values(status="sending", lease_owner="dead", lease_expires_at=world.clock())
        )
    world.clock.advance(1)
    assert ("alerts", killed) in world.sweep()
    assert world.send(killed) == "sent"


def test_import_confirmations_go_on_the_bulk_queue(world: World) -> None:
    woken = MemoryDispatcher()
    rows = [ReaderRow(line=i + 2, email=f"r{i}@example.com") for i in range(3)]
    report = import_readers(world.engine, rows, world.settings, consented=False, dispatcher=woken)
    assert report.confirmations == 3
    assert [queue for queue, _ in woken.messages] == ["digests"] * 3
    assert {world.send(i) for _, i in woken.messages} == {"sent"}
    # Importing them again queues nothing more: they are known.
    again = import_readers(world.engine, rows, world.settings, consented=False, dispatcher=woken)
    assert again.confirmations == 0 and len(woken.messages) == 3


def test_unconfirmed_readers_are_forgotten_after_30_days(world: World) -> None:
    world.pending("old@example.com")
    world.pending("recent@example.com")
    rows = [ReaderRow(line=2, email="active@example.com")]
    import_readers(world.engine, rows, world.settings, consented=True)
    days_ago = world.clock() - timedelta(days=31)
    with world.engine.begin() as conn:
        conn.execute(
            update(Subscriber)
            .where(Subscriber.email.in_(["old@example.com", "active@example.com"]))
            .values(created_at=days_ago, updated_at=days_ago)
        )
    assert transactional.forget_unconfirmed(world.engine, world.settings, now=world.clock) == 1
    with Session(world.engine) as session:
        left = set(session.scalars(select(Subscriber.email)))
        orphans = session.scalars(
            select(Subscription.id).where(~Subscription.subscriber_id.in_(select(Subscriber.id)))
        ).all()
    assert left == {"recent@example.com", "active@example.com"} and orphans == []
