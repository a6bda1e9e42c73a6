"""Claim, send, record on a real SQLite file, without a broker or worker processes.

Batches that ``Service`` would have queued are taken from a :class:`MemoryDispatcher` and sent
in-process by :class:`EditionSender` over a :class:`MemoryTransport`; time is a clock the test
moves, so leases, retries and stalls act at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.dispatch import ALERTS_QUEUE, DIGESTS_QUEUE, Batch
from mailer.models import (
    Delivery,
    Edition,
    EditionStory,
    Story,
)
from mailer.suppress import hash_for, suppress_address
from mailer.transport import MemoryTransport
from tests.support.world import (
    HARD_BOUNCE,
    PERMANENT,
    TEMPORARY,
    WorkerKilled,
    World,
    make_world,
    migrated_template,
    sent_to,
)

__all__ = ["migrated_template"]


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template)


# -- exactly once ------------------------------------------------------------------------------


def test_every_planned_reader_is_sent_exactly_once_and_the_edition_rolls_up(world: World) -> None:
    readers = world.add_readers(10)
    started = world.service.trigger_alert(world.add_story())
    assert started.created and started.planned == 10 and started.status == "sending"
    queued = world.dispatcher.sent
    assert {queue for queue, _ in queued} == {ALERTS_QUEUE}
    assert len(queued) == 3  # batches of 4 delivery ids

    sender = world.sender()
    reports = world.drain(sender)
    assert sum(r.claimed for r in reports) == 10
    assert all(not r.stopped for r in reports)

    assert sent_to(*world.transports) == Counter(readers)
    rows = world.deliveries(started.edition_id)
    assert {r.status for r in rows} == {"sent"}
    assert all(r.attempts == 1 and r.sent_at == world.clock() for r in rows)
    assert len({r.message_id for r in rows}) == 10

    assert world.edition(started.edition_id).status == "sending"  # not rolled up yet
    assert world.finish(started.edition_id)
    edition = world.edition(started.edition_id)
    assert edition.status == "sent"
    assert (edition.total_count, edition.sent_count, edition.failed_count) == (10, 10, 0)
    assert edition.finished_at == world.clock()


def test_sweep_rolls_up_a_finished_edition(world: World) -> None:
    world.add_readers(5)
    started = world.service.trigger_alert(world.add_story())
    world.drain(world.sender())
    report = world.sweep()
    assert report.finished == [started.edition_id]
    assert report.redispatched == []
    edition = world.edition(started.edition_id)
    assert (edition.status, edition.sent_count) == ("sent", 5)


def test_a_replayed_batch_sends_nothing(world: World) -> None:
    world.add_readers(6)
    started = world.service.trigger_alert(world.add_story())
    batches = world.take_batches()
    sender = world.sender()
    for _, batch in batches:
        sender.send_batch(batch)
    assert len(sender.transport.attempts) == 6  # type: ignore[attr-defined]

    # The broker delivers every message again, to the same worker and to another one.
    other = world.sender()
    for _, batch in batches:
        assert sender.send_batch(batch).claimed == 0
        assert other.send_batch(batch).claimed == 0
    assert len(sender.transport.attempts) == 6  # type: ignore[attr-defined]
    assert other.transport.attempts == []  # type: ignore[attr-defined]
    assert {r.attempts for r in world.deliveries(started.edition_id)} == {1}


def test_a_batch_of_another_range_claims_only_its_own_rows(world: World) -> None:
    world.add_readers(8)
    started = world.service.trigger_alert(world.add_story())
    (_, first), (_, second) = world.take_batches()
    report = world.sender().send_batch(first)
    assert report.claimed == 4
    statuses = {r.id: r.status for r in world.deliveries(started.edition_id)}
    assert all(
        status == ("sent" if first.first_id <= row_id <= first.last_id else "queued")
        for row_id, status in statuses.items()
    )
    assert second.first_id > first.last_id


# -- temporary failures, backoff and giving up ---------------------------------------------------


def test_temporary_failure_is_deferred_with_backoff_and_retried_by_the_sweeper(
    world: World,
) -> None:
    readers = world.add_readers(4)
    slow = readers[1]
    transport = MemoryTransport({slow: TEMPORARY})
    started = world.service.trigger_alert(world.add_story())
    sender = world.sender(transport)
    first_try = world.clock()
    reports = world.drain(sender)
    assert reports[0].outcomes == {"sent": 3, "temporary": 1}

    row = world.by_email(started.edition_id)[slow]
    assert row.status == "deferred" and row.attempts == 1
    # retry_base_seconds * 2**0 * (0.5 + 0.5)
    assert row.next_attempt_at == first_try + timedelta(seconds=60)
    assert row.last_code == 451 and "try again later" in (row.last_response or "")
    assert not world.finish(started.edition_id)  # a deferred row keeps the edition open

    world.clock.set(first_try + timedelta(seconds=59))
    report = world.sweep()
    assert report.retried == 0 and report.redispatched == []
    assert world.dispatcher.sent == []
    assert world.by_email(started.edition_id)[slow].status == "deferred"

    world.clock.set(first_try + timedelta(seconds=60))
    report = world.sweep()
    assert report.retried == 1 and report.redispatched == [started.edition_id]
    queued = world.dispatcher.sent
    assert len(queued) == 1 and queued[0][0] == ALERTS_QUEUE
    assert queued[0][1].first_id == queued[0][1].last_id == row.id
    assert world.by_email(started.edition_id)[slow].status == "queued"

    # The reader's server recovers: the retry goes out and the edition finishes.
    transport.script = {}
    second_try = world.clock()
    world.drain(sender)
    row = world.by_email(started.edition_id)[slow]
    assert (row.status, row.attempts, row.sent_at) == ("sent", 2, second_try)
    assert sent_to(transport) == Counter(readers)
    assert world.sweep().finished == [started.edition_id]
    assert world.edition(started.edition_id).sent_count == 4


def test_backoff_doubles_per_attempt_and_is_capped(world: World) -> None:
    world.settings.retry_max_seconds = 100.0
    world.settings.max_attempts = 5
    (reader,) = world.add_readers(1)
    transport = MemoryTransport({reader: TEMPORARY})
    started = world.service.trigger_alert(world.add_story())
    sender = world.sender(transport)
    delays = []
    for _ in range(3):
        tried_at = world.clock()
        world.drain(sender)
        row = world.by_email(started.edition_id)[reader]
        assert row.status == "deferred"
        assert row.next_attempt_at is not None
        delays.append((row.next_attempt_at - tried_at).total_seconds())
        world.clock.set(row.next_attempt_at)
        assert world.sweep().retried == 1
    assert delays == [60.0, 100.0, 100.0]  # 60, min(120, 100), min(240, 100)


def test_after_max_attempts_temporary_failures_the_reader_is_given_up(world: World) -> None:
    readers = world.add_readers(2)
    flaky = readers[0]
    transport = MemoryTransport({flaky: TEMPORARY})
    started = world.service.trigger_alert(world.add_story())
    sender = world.sender(transport)
    world.drain(sender)
    for attempt in range(2, world.settings.max_attempts + 1):
        row = world.by_email(started.edition_id)[flaky]
        assert row.status == "deferred" and row.attempts == attempt - 1
        assert row.next_attempt_at is not None
        world.clock.set(row.next_attempt_at)
        assert world.sweep().retried == 1
        world.drain(sender)

    row = world.by_email(started.edition_id)[flaky]
    assert row.status == "failed" and row.attempts == world.settings.max_attempts
    assert "gave up after 3 attempts" in (row.last_response or "")
    assert [recipient for _, recipient, _ in transport.attempts].count(flaky) == 3
    assert world.sweep().finished == [started.edition_id]
    edition = world.edition(started.edition_id)
    assert (edition.status, edition.sent_count, edition.failed_count) == ("sent", 1, 1)


def test_a_row_older_than_max_age_fails_at_its_next_temporary_failure(world: World) -> None:
    world.settings.max_attempts = 10
    (reader,) = world.add_readers(1)
    transport = MemoryTransport({reader: TEMPORARY})
    started = world.service.trigger_alert(world.add_story())
    sender = world.sender(transport)
    world.drain(sender)
    assert world.by_email(started.edition_id)[reader].status == "deferred"

    world.clock.advance(world.settings.max_age_seconds + 60)
    assert world.sweep().retried == 1
    world.drain(sender)
    row = world.by_email(started.edition_id)[reader]
    assert row.status == "failed" and row.attempts == 2
    assert "gave up after 2 attempts" in (row.last_response or "")
    assert world.sweep().finished == [started.edition_id]
    assert world.edition(started.edition_id).status == "failed"  # nobody was reached


# -- permanent failures and bounces ----------------------------------------------------------


def test_hard_bounce_suppresses_the_reader_for_every_later_plan(world: World) -> None:
    readers = world.add_readers(3)
    gone = readers[2]
    transport = MemoryTransport({gone: HARD_BOUNCE})
    started = world.service.trigger_alert(world.add_story())
    world.drain(world.sender(transport))

    row = world.by_email(started.edition_id)[gone]
    assert row.status == "bounced" and row.last_code == 550
    (suppression,) = world.suppressions()
    assert suppression.email_hash == hash_for(gone, world.settings)
    assert suppression.reason == "hard_bounce"
    assert world.subscriber_status(gone) == "bounced"
    assert world.sweep().finished == [started.edition_id]
    edition = world.edition(started.edition_id)
    assert (edition.sent_count, edition.bounced_count) == (2, 1)

    later = world.service.trigger_alert(world.add_story("عاجل: خبر آخر"))
    assert later.planned == 2
    assert set(world.by_email(later.edition_id)) == set(readers[:2])


def test_permanent_failure_fails_the_row_without_suppressing(world: World) -> None:
    readers = world.add_readers(2)
    refused = readers[0]
    transport = MemoryTransport({refused: PERMANENT})
    started = world.service.trigger_alert(world.add_story())
    world.drain(world.sender(transport))

    row = world.by_email(started.edition_id)[refused]
    assert (row.status, row.attempts, row.last_code) == ("failed", 1, 554)
    assert row.next_attempt_at == row.created_at  # not scheduled for a retry
    assert world.suppressions() == []
    assert world.subscriber_status(refused) == "active"
    later = world.service.trigger_alert(world.add_story("عاجل: خبر آخر"))
    assert later.planned == 2


# -- leases ---------------------------------------------------------------------------------


class DyingTransport(MemoryTransport):
    """The worker process dies while offering the ``die_at``-th message."""

    def __init__(self, die_at: int) -> None:
        super().__init__()
        self.die_at = die_at

    def send(self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False) -> Any:
        if len(self.attempts) + 1 == self.die_at:
            self.attempts.append((sender, recipient, data))
            raise WorkerKilled
        return super().send(sender, recipient, data, smtputf8=smtputf8)


def test_expired_lease_of_a_killed_worker_is_reclaimed_and_redispatched(world: World) -> None:
    readers = world.add_readers(4)
    started = world.service.trigger_alert(world.add_story())
    (_, batch), *_ = world.take_batches()
    dying = DyingTransport(die_at=2)
    killed_at = world.clock()
    with pytest.raises(WorkerKilled):
        world.sender(dying).send_batch(batch)
    rows = world.deliveries(started.edition_id)
    assert [r.status for r in rows] == ["sent", "sending", "sending", "queued"]
    lease_end = killed_at + timedelta(seconds=world.settings.lease_seconds)
    assert {r.lease_expires_at for r in rows if r.status == "sending"} == {lease_end}

    # While the lease lives, nobody else may take those rows, and the sweeper leaves them.
    world.clock.set(lease_end - timedelta(seconds=1))
    survivor = MemoryTransport()
    other = world.sender(survivor)
    assert other.send_batch(batch).claimed == 1  # only the row the dead worker never claimed
    assert sent_to(survivor) == Counter([readers[3]])
    report = world.sweep()
    assert report.reclaimed == 0
    assert [r.status for r in world.deliveries(started.edition_id)] == [
        "sent",
        "sending",
        "sending",
        "sent",
    ]

    world.clock.set(lease_end + timedelta(seconds=1))
    world.dispatcher.sent.clear()
    report = world.sweep()
    assert report.reclaimed == 2 and report.redispatched == [started.edition_id]
    assert [r.status for r in world.deliveries(started.edition_id)][1:3] == ["queued", "queued"]
    assert world.dispatcher.sent  # woken again
    world.drain(other)
    everyone = sent_to(dying, survivor)
    assert everyone == Counter(readers)  # the one being offered when killed was not accepted
    assert {r.status for r in world.deliveries(started.edition_id)} == {"sent"}
    assert world.sweep().finished == [started.edition_id]


def test_sweep_reclaims_only_expired_leases(world: World) -> None:
    world.add_readers(4)
    started = world.service.trigger_alert(world.add_story())
    now = world.clock()
    ids = [r.id for r in world.deliveries(started.edition_id)]
    with world.engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[:2]))
            .values(
                status="sending", lease_owner="dead", lease_expires_at=now - timedelta(seconds=1)
            )
        )
        conn.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids[2:]))
            .values(
                status="sending", lease_owner="alive", lease_expires_at=now + timedelta(seconds=60)
            )
        )
    world.take_batches()
    report = world.sweep()
    assert report.reclaimed == 2
    assert report.redispatched == [started.edition_id]
    rows = world.deliveries(started.edition_id)
    assert [(r.status, r.lease_owner) for r in rows] == [
        ("queued", None),
        ("queued", None),
        ("sending", "alive"),
        ("sending", "alive"),
    ]
    batches = [batch for _, batch in world.dispatcher.sent]
    assert batches == [Batch(started.edition_id, ids[0], ids[1])]


# -- pause, resume, cancel --------------------------------------------------------------------


def test_pause_stops_claims_and_resume_sends_the_rest_once(world: World) -> None:
    readers = world.add_readers(10)
    started = world.service.trigger_alert(world.add_story())
    batches = world.take_batches()
    sender = world.sender()
    assert sender.send_batch(batches[0][1]).claimed == 4

    world.service.pause(started.edition_id)
    assert world.edition(started.edition_id).status == "paused"
    for _, batch in batches[1:]:
        report = sender.send_batch(batch)
        assert report.claimed == 0 and report.stopped
    assert len(sender.transport.attempts) == 4  # type: ignore[attr-defined]
    assert world.sweep().redispatched == []  # the sweeper does not wake a paused edition
    world.clock.advance(world.settings.stall_seconds * 2)
    assert world.sweep().redispatched == []
    world.dispatcher.sent.clear()

    assert world.service.resume(started.edition_id) == 2  # six queued rows left, batches of 4
    assert world.edition(started.edition_id).status == "sending"
    world.drain(sender)
    # The old wake-ups arrive too, late: they find nothing left.
    for _, batch in batches:
        assert sender.send_batch(batch).claimed == 0
    assert sent_to(sender.transport) == Counter(readers)  # type: ignore[arg-type]
    assert world.sweep().finished == [started.edition_id]
    assert world.edition(started.edition_id).sent_count == 10


def test_cancel_marks_unsent_rows_cancelled_and_sends_nothing_more(world: World) -> None:
    world.add_readers(10)
    transport = MemoryTransport()
    started = world.service.trigger_alert(world.add_story())
    batches = world.take_batches()
    sender = world.sender(transport)
    sender.send_batch(batches[0][1])

    world.service.cancel(started.edition_id)
    for _, batch in batches:
        report = sender.send_batch(batch)
        assert report.claimed == 0 and report.stopped
    assert len(transport.attempts) == 4
    statuses = Counter(r.status for r in world.deliveries(started.edition_id))
    assert statuses == {"sent": 4, "cancelled": 6}
    world.clock.advance(world.settings.stall_seconds * 2)
    report = world.sweep()
    assert report.redispatched == [] and report.finished == []
    assert world.dispatcher.sent == []
    assert world.edition(started.edition_id).status == "cancelled"


# -- unsubscribe wins --------------------------------------------------------------------------


def test_a_reader_who_leaves_after_planning_is_not_sent(world: World) -> None:
    readers = world.add_readers(5)
    left, suppressed = readers[1], readers[3]
    started = world.service.trigger_alert(world.add_story())
    assert started.planned == 5
    world.set_subscriber_status(left, "unsubscribed")
    with world.engine.begin() as conn:
        suppress_address(conn, suppressed, "complaint", "test", world.settings)

    transport = MemoryTransport()
    reports = world.drain(world.sender(transport))
    assert sum(r.claimed for r in reports) == 3
    assert sent_to(transport) == Counter(r for r in readers if r not in (left, suppressed))
    rows = world.by_email(started.edition_id)
    for email in (left, suppressed):
        assert rows[email].status == "suppressed"
        assert rows[email].attempts == 0
    assert world.sweep().finished == [started.edition_id]
    edition = world.edition(started.edition_id)
    assert (edition.sent_count, edition.suppressed_count) == (3, 2)


# -- alerts are idempotent ---------------------------------------------------------------------


def test_triggering_an_alert_twice_returns_the_same_edition(world: World) -> None:
    world.add_readers(5)
    story = world.add_story()
    first = world.service.trigger_alert(story)
    queued = list(world.dispatcher.sent)
    second = world.service.trigger_alert(story)
    assert second.edition_id == first.edition_id
    assert (first.created, second.created) == (True, False)
    assert second.planned == 5
    assert world.dispatcher.sent == queued  # no second wake-up
    assert len(world.deliveries(first.edition_id)) == 5

    world.drain(world.sender())
    third = world.service.trigger_alert(story)
    assert third.edition_id == first.edition_id and not third.created
    assert world.dispatcher.sent == []
    assert len(world.deliveries(first.edition_id)) == 5


def test_an_alert_reaches_the_topic_and_breaking_lists_at_instant_cadence(world: World) -> None:
    breaking = world.add_readers(2)
    syria = world.add_readers(2, topics=("syria",), start=10)
    world.add_readers(2, topics=("egypt",), start=20)
    world.add_readers(2, topics=("syria",), cadence="daily", start=30)
    started = world.service.trigger_alert(world.add_story(topic="syria"))
    assert set(world.by_email(started.edition_id)) == set(breaking + syria)


# -- digests -----------------------------------------------------------------------------------


def stories_of(world: World, edition_id: int) -> list[str]:
    with Session(world.engine) as session:
        return list(
            session.scalars(
                select(Story.title)
                .join(EditionStory, EditionStory.story_id == Story.id)
                .where(EditionStory.edition_id == edition_id)
                .order_by(EditionStory.position)
            )
        )


def test_a_digest_with_no_new_stories_is_skipped(world: World) -> None:
    world.add_readers(3, topics=("egypt",), cadence="daily")
    started = world.service.send_digest("egypt", "daily")
    assert started.status == "skipped" and started.planned == 0
    assert world.deliveries(started.edition_id) == []
    assert world.dispatcher.sent == []
    edition = world.edition(started.edition_id)
    assert edition.status == "skipped" and "no new stories" in edition.status_reason


def test_a_digest_has_the_stories_since_the_last_digest_breaking_first(world: World) -> None:
    readers = world.add_readers(3, topics=("syria",), cadence="daily")
    world.add_readers(2, topics=("syria",), cadence="weekly", start=10)
    now = world.clock()
    world.add_story("قديم عادي", breaking=False, published_at=now - timedelta(hours=3))
    world.add_story("قديم عاجل", breaking=True, published_at=now - timedelta(hours=3, minutes=5))

    first = world.service.send_digest("syria", "daily")
    assert first.status == "sending" and first.planned == 3
    assert stories_of(world, first.edition_id) == ["قديم عاجل", "قديم عادي"]
    assert {queue for queue, _ in world.dispatcher.sent} == {DIGESTS_QUEUE}
    transport = MemoryTransport()
    world.drain(world.sender(transport))
    assert sent_to(transport) == Counter(readers)
    assert world.sweep().finished == [first.edition_id]

    assert world.service.send_digest("syria", "daily").status == "skipped"

    # That digest went out two hours ago; two stories came in since, and one before it.
    with world.engine.begin() as conn:
        conn.execute(
            update(Edition)
            .where(Edition.id == first.edition_id)
            .values(started_at=now - timedelta(hours=2))
        )
    world.add_story("جديد عادي", breaking=False, published_at=now - timedelta(minutes=30))
    world.add_story("جديد عاجل", breaking=True, published_at=now - timedelta(minutes=90))
    world.add_story("متأخر", breaking=True, published_at=now - timedelta(hours=2, minutes=1))
    second = world.service.send_digest("syria", "daily")
    assert second.status == "sending"
    assert stories_of(world, second.edition_id) == ["جديد عاجل", "جديد عادي"]

    # The weekly list has had no digest yet: it gets all five.
    weekly = world.service.send_digest("syria", "weekly")
    assert weekly.planned == 2
    assert stories_of(world, weekly.edition_id) == [
        "جديد عاجل",
        "متأخر",
        "قديم عاجل",
        "جديد عادي",
        "قديم عادي",
    ]


def test_a_story_published_in_the_future_waits_for_the_next_digest(world: World) -> None:
    world.add_readers(2, topics=("syria",), cadence="daily")
    world.add_story("منشور", breaking=False, published_at=world.clock() - timedelta(hours=1))
    later = world.add_story(
        "لاحقاً", breaking=False, published_at=world.clock() + timedelta(hours=1)
    )

    first = world.service.send_digest("syria", "daily")
    assert stories_of(world, first.edition_id) == ["منشور"]
    assert world.service.send_digest("syria", "daily").status == "skipped"

    # Its time comes (moved back rather than waiting an hour): the next digest has it, once.
    started_at = world.edition(first.edition_id).started_at
    assert started_at is not None
    with world.engine.begin() as conn:
        conn.execute(
            update(Story)
            .where(Story.id == later)
            .values(published_at=started_at + timedelta(milliseconds=1))
        )
    second = world.service.send_digest("syria", "daily")
    assert stories_of(world, second.edition_id) == ["لاحقاً"]
    assert world.service.send_digest("syria", "daily").status == "skipped"


# -- the sweeper and stalls --------------------------------------------------------------------


def test_the_sweeper_redispatches_a_stalled_edition_but_not_a_fresh_one(world: World) -> None:
    readers = world.add_readers(6)
    stalled = world.service.trigger_alert(world.add_story("عاجل: أول"))
    world.clock.advance(world.settings.stall_seconds + 30)
    fresh = world.service.trigger_alert(world.add_story("عاجل: ثان"))
    # The broker lost every wake-up (flushed, restarted…).
    world.dispatcher.sent.clear()
    # Planning stamps the real time, not the test's clock: make the second edition fresh.
    with world.engine.begin() as conn:
        conn.execute(
            update(Edition).where(Edition.id == fresh.edition_id).values(progress_at=world.clock())
        )

    report = world.sweep()
    assert report.redispatched == [stalled.edition_id]
    assert {batch.edition_id for _, batch in world.dispatcher.sent} == {stalled.edition_id}
    assert len(world.dispatcher.sent) == 2  # six queued rows, batches of four

    # Right after a re-dispatch the edition is not stalled again.
    world.dispatcher.sent.clear()
    assert world.sweep().redispatched == []

    sender = world.sender()
    world.sweep()
    world.clock.advance(world.settings.stall_seconds + 1)
    report = world.sweep()
    assert set(report.redispatched) == {stalled.edition_id, fresh.edition_id}
    world.drain(sender)
    assert sent_to(sender.transport) == Counter(readers * 2)  # type: ignore[arg-type]
    assert sorted(world.sweep().finished) == sorted([stalled.edition_id, fresh.edition_id])
