"""End to end: real Celery workers, a real SMTP server, on SQLite + the embedded broker and on
PostgreSQL + Redis. Each test is one promise of the "Delivery core" issue."""

from __future__ import annotations

import email
import email.policy
import signal
import time
from collections import Counter

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.models import Delivery, Subscriber, Subscription, Suppression
from tests.conftest import scale
from tests.support.stack import REDIS_URL, Stack


def recipients(stack: Stack) -> Counter[str]:
    return Counter(r for msg in stack.smtp.received for r in msg.rcpt_tos)


def test_alert_reaches_every_reader_once_as_rtl_multipart(stack: Stack) -> None:
    readers = scale(300, 2000)
    stack.add_readers(readers)
    story = stack.add_story("عاجل: سقوط النظام في دمشق")
    stack.start_worker()
    started = stack.service.trigger_alert(story)
    assert started.planned == readers
    stack.wait_finished(started.edition_id)

    got = recipients(stack)
    assert len(got) == readers and set(got.values()) == {1}
    message_ids = [m.message_id for m in stack.smtp.received]
    assert len(set(message_ids)) == readers
    parsed = email.message_from_bytes(stack.smtp.received[0].data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    text_part, html_part = parsed.get_payload()  # type: ignore[misc]
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    html = html_part.get_content()
    assert '<html lang="ar" dir="rtl"' in html
    assert 'dir="rtl"' in html.split("<body", 1)[1].split("<table", 1)[1][:300]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://news.example.com/unsubscribe/" in parsed["List-Unsubscribe"]
    assert parsed["Subject"].startswith("عاجل")
    rows = stack.deliveries(started.edition_id)
    assert {r.status for r in rows} == {"sent"}
    assert {r.message_id for r in rows} == set(message_ids)


def test_killed_worker_loses_nobody_and_duplicates_keep_their_message_id(stack: Stack) -> None:
    readers = scale(1000, 5000)
    stack.add_readers(readers)
    stack.smtp.delay = 0.002  # slow enough that the kill lands mid-edition
    story = stack.add_story()
    worker = stack.start_worker()
    started = stack.service.trigger_alert(story)
    stack.wait_until(lambda: len(stack.smtp.received) > readers // 5, 60, "sending to start")
    stack.kill_worker(worker, signal.SIGKILL)  # the main process and both children
    sent_before = len(stack.smtp.received)
    assert sent_before < readers, "the edition finished before the kill; make it slower"
    stack.smtp.delay = 0
    stack.start_worker()
    stack.wait_finished(started.edition_id, timeout=180)

    got = recipients(stack)
    assert len(got) == readers  # nobody without a message
    duplicates = {r: n for r, n in got.items() if n > 1}
    assert sum(n - 1 for n in duplicates.values()) <= stack.settings.worker_concurrency
    for address in duplicates:
        ids = {m.message_id for m in stack.smtp.received if address in m.rcpt_tos}
        assert len(ids) == 1, f"{address} got copies with different Message-IDs: {ids}"
    rows = stack.deliveries(started.edition_id)
    assert Counter(r.status for r in rows) == {"sent": readers}
    assert stack.edition_status(started.edition_id) == "sent"


def test_temporary_failures_are_retried_and_hard_bounces_suppressed(stack: Stack) -> None:
    readers = scale(150, 600)
    stack.add_readers(readers)
    bad = "reader000007@example.com"

    def rule(recipient: str, attempt: int) -> tuple[int, str] | None:
        if recipient == bad:
            return 550, "5.1.1 <reader000007@example.com>: Recipient address rejected"
        number = int(recipient[6:12])
        if number % 3 == 0 and attempt == 1:
            return 451, "4.7.1 Greylisted, try again later"
        return None

    stack.smtp.set_rule(rule)
    stack.start_worker()
    started = stack.service.trigger_alert(stack.add_story())
    stack.wait_finished(started.edition_id)

    rows = {r.subscriber_id: r for r in stack.deliveries(started.edition_id)}
    with Session(stack.engine) as session:
        emails = dict(session.execute(select(Subscriber.id, Subscriber.email)).all())
        suppressed = set(session.scalars(select(Suppression.email)))
    by_email = {emails[sid]: row for sid, row in rows.items()}
    assert by_email[bad].status == "bounced" and by_email[bad].attempts == 1
    assert by_email[bad].last_code == 550
    assert bad in suppressed
    greylisted = [e for e in by_email if int(e[6:12]) % 3 == 0 and e != bad]
    assert greylisted
    for address in greylisted:
        assert by_email[address].status == "sent" and by_email[address].attempts == 2
    got = recipients(stack)
    assert bad not in got and len(got) == readers - 1

    stack.smtp.set_rule(None)
    again = stack.service.trigger_alert(stack.add_story("خبر ثان"))
    assert again.planned == readers - 1  # the bounced address is not planned again
    stack.wait_finished(again.edition_id)


def test_flushed_broker_is_recovered_by_the_sweeper(stack: Stack) -> None:
    readers = scale(400, 2000)
    stack.add_readers(readers)
    stack.smtp.delay = 0.005
    stack.start_worker()
    started = stack.service.trigger_alert(stack.add_story())
    stack.wait_until(lambda: len(stack.smtp.received) > 20, 60, "sending to start")
    if stack.kind == "postgres":  # every queued and unacknowledged wake-up is gone
        redis.Redis.from_url(REDIS_URL).flushdb()
    else:
        for path in (stack.settings.broker_dir / "queue").glob("*.msg"):
            path.unlink()
    assert len(stack.smtp.received) < readers, "finished before the flush; make it slower"
    stack.smtp.delay = 0
    stack.wait_finished(started.edition_id, timeout=120)
    got = recipients(stack)
    assert len(got) == readers and set(got.values()) == {1}


def test_unsubscribe_mid_edition_wins_for_later_batches(stack: Stack) -> None:
    readers = scale(300, 1000)
    stack.add_readers(readers)
    stack.smtp.delay = 0.005
    stack.start_worker()
    started = stack.service.trigger_alert(stack.add_story())
    stack.wait_until(lambda: len(stack.smtp.received) > 20, 60, "sending to start")
    leaver = f"reader{readers:06d}@example.com"  # the last id: claimed last
    with Session(stack.engine) as session, session.begin():
        subscriber_id = session.scalar(select(Subscriber.id).where(Subscriber.email == leaver))
        row = session.execute(
            select(Delivery.status)
            .where(
                Delivery.edition_id == started.edition_id, Delivery.subscriber_id == subscriber_id
            )
            .with_for_update()
        ).one()
        assert row.status == "queued"
        session.execute(
            update(Subscriber).where(Subscriber.id == subscriber_id).values(status="unsubscribed")
        )
        session.query(Subscription).filter_by(subscriber_id=subscriber_id).delete()
    stack.smtp.delay = 0
    stack.wait_finished(started.edition_id)
    assert leaver not in recipients(stack)
    assert len(recipients(stack)) == readers - 1
    statuses = {r.subscriber_id: r.status for r in stack.deliveries(started.edition_id)}
    assert statuses[subscriber_id] == "suppressed"


def test_server_that_never_answers_defers_and_the_worker_carries_on(stack: Stack) -> None:
    readers = scale(60, 300)
    stack.add_readers(readers)
    stack.smtp.hang(True)
    stack.start_worker()
    began = time.monotonic()
    started = stack.service.trigger_alert(stack.add_story())
    stack.wait_until(
        lambda: any(r.status == "deferred" for r in stack.deliveries(started.edition_id)),
        30,
        "a timed-out reader to be deferred",
    )
    assert time.monotonic() - began < 20  # the 2 s deadline tripped, no worker stuck
    timed_out = [r for r in stack.deliveries(started.edition_id) if r.status == "deferred"]
    assert all("timed out" in (r.last_response or "") for r in timed_out)
    stack.smtp.hang(False)
    stack.wait_finished(started.edition_id, timeout=120)
    rows = stack.deliveries(started.edition_id)
    assert {r.status for r in rows} == {"sent"}
    assert any(r.attempts >= 2 for r in rows)
    assert len(recipients(stack)) == readers


def test_sigterm_during_an_edition_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    """A deploy: the worker gets SIGTERM (warm shutdown), a new one takes over."""
    readers = scale(600, 5000)
    stack.add_readers(readers)
    stack.smtp.delay = 0.003
    worker = stack.start_worker()
    started = stack.service.trigger_alert(stack.add_story())
    stack.wait_until(lambda: len(stack.smtp.received) > readers // 5, 60, "sending to start")
    worker.send_signal(signal.SIGTERM)  # to the main process only, as `docker stop` does
    worker.wait(60)
    assert len(stack.smtp.received) < readers, "finished before the deploy; make it slower"
    stack.workers.remove(worker)
    stack.smtp.delay = 0
    stack.start_worker()
    stack.wait_finished(started.edition_id, timeout=120)
    got = recipients(stack)
    assert len(got) == readers and set(got.values()) == {1}
    assert Counter(r.status for r in stack.deliveries(started.edition_id)) == {"sent": readers}
