"""Editions under control through the API: live progress, pause and resume without repeating
anyone, cancel with exact counts, a reader's preview, test sends and resending failures."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter
from email.message import EmailMessage

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import Delivery, Subscriber, Topic
from mailer.sweeper import sweep
from mailer.tokens import UNSUBSCRIBE, Tokens
from mailer.transport import MemoryTransport, SendResult
from tests.api.conftest import World, sent_to
from tests.support.smtp_server import ScriptedSMTPServer


def start_alert(world: World, topic: str = "syria") -> int:
    answer = world.call(
        "POST", "/alerts", "editor", json={"story_id": world.add_story(topic=topic)}
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["edition_id"])


def progress(world: World, edition_id: int) -> dict[str, object]:
    answer = world.call("GET", f"/editions/{edition_id}", "operator")
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    return body


def test_progress_is_live_and_pause_resume_sends_everyone_exactly_once(world: World) -> None:
    readers = world.add_readers(40)
    edition_id = start_alert(world)
    assert progress(world, edition_id)["progress"] == {
        "total": 40,
        "done": 0,
        "fraction": 0.0,
        "counts": {"queued": 40},
    }

    batches = list(world.dispatcher.sent)  # ten batches of four
    world.dispatcher.sent.clear()
    sender = world.sender()
    for _, batch in batches[:3]:
        sender.send_batch(batch)
    shown = progress(world, edition_id)
    assert shown["progress"] == {
        "total": 40,
        "done": 12,
        "fraction": 0.3,
        "counts": {"queued": 28, "sent": 12},
    }

    paused = world.call(
        "POST", f"/editions/{edition_id}/pause", "operator", json={"reason": "typo"}
    )
    assert paused.status_code == 200
    assert (paused.json()["status"], paused.json()["reason"]) == ("paused", "typo")
    # The rest of the already queued batches reach workers while paused: nothing is claimed.
    reports = [sender.send_batch(batch) for _, batch in batches[3:]]
    assert all(r.claimed == 0 and r.stopped == "edition not sending" for r in reports)
    assert len(world.transport.sent) == 12
    assert world.call("POST", f"/editions/{edition_id}/pause", "operator").status_code == 409

    resumed = world.call("POST", f"/editions/{edition_id}/resume", "operator")
    assert resumed.status_code == 200 and resumed.json()["status"] == "sending"
    world.drain()
    sweep(world.engine, world.settings, world.dispatcher)
    assert sent_to(world.transport) == Counter(readers)  # everyone, once
    done = progress(world, edition_id)
    assert done["status"] == "sent" and done["progress"]["counts"] == {"sent": 40}  # type: ignore[index]

    actions = [(e.action, e.target) for e in world.audit() if e.action.startswith("edition.")]
    target = f"edition:{edition_id}"
    assert actions == [("edition.pause", target), ("edition.resume", target)]
    pause_event = next(e for e in world.audit() if e.action == "edition.pause")
    assert pause_event.details == {"reason": "typo"} and pause_event.actor.endswith(":operator-bot")


def test_cancel_leaves_exact_counts(world: World) -> None:
    world.add_readers(20)
    edition_id = start_alert(world)
    batches = list(world.dispatcher.sent)
    world.dispatcher.sent.clear()
    sender = world.sender()
    for _, batch in batches[:2]:
        sender.send_batch(batch)

    cancelled = world.call("POST", f"/editions/{edition_id}/cancel", "operator")
    assert cancelled.status_code == 200
    for _, batch in batches[2:]:
        sender.send_batch(batch)
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["progress"]["counts"] == {"sent": 8, "cancelled": 12}
    assert len(world.transport.sent) == 8
    assert world.call("POST", f"/editions/{edition_id}/resume", "operator").status_code == 409
    assert world.call("POST", "/editions/999/cancel", "operator").status_code == 404


def message_of(transport: MemoryTransport, address: str) -> EmailMessage:
    data = next(d for _, rcpt, d in transport.sent if rcpt == address)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_preview_is_what_that_reader_gets(world: World) -> None:
    [amal] = world.add_readers(1, name="أمل")
    [badr] = world.add_readers(1, name="بدر", start=2)
    edition_id = start_alert(world)

    answer = world.call(
        "GET", f"/editions/{edition_id}/preview", "operator", params={"reader": amal.upper()}
    )
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert "مرحباً أمل،" in shown["html"] and "مرحباً أمل،" in shown["text"]
    assert "بدر" not in shown["html"]
    token = re.search(r"https://news\.example\.com/unsubscribe/([\w.-]+)", shown["html"])
    assert token is not None
    with Session(world.engine) as session:
        amal_id = session.scalar(select(Subscriber.id).where(Subscriber.email == amal))
        syria = session.scalar(select(Topic.id).where(Topic.slug == "syria"))
    assert Tokens(world.settings).verify(UNSUBSCRIBE, token.group(1)) == [amal_id, syria, "instant"]

    world.drain()  # the real send, for comparison
    real = message_of(world.transport, amal)
    assert shown["subject"] == real["Subject"]
    assert shown["html"] == real.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert shown["text"] == real.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message_of(world.transport, badr).get_body(("html",)).get_content() != shown["html"]  # type: ignore[union-attr]

    unknown = world.call(
        "GET", f"/editions/{edition_id}/preview", "operator", params={"reader": "x@example.com"}
    )
    assert unknown.status_code == 404
    bad = world.call("GET", f"/editions/{edition_id}/preview", "operator", params={"reader": "x"})
    assert bad.status_code == 422


def test_a_test_send_reaches_the_smtp_server_and_creates_no_deliveries(
    smtp_world: World, smtp: ScriptedSMTPServer
) -> None:
    world = smtp_world
    world.add_readers(3)
    edition_id = start_alert(world)
    answer = world.call(
        "POST", f"/editions/{edition_id}/test", "operator", json={"to": ["seed@example.net"]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {"address": "seed@example.net", "outcome": "sent", "code": 250, "text": "2.0.0 OK queued"}
    ]
    [received] = smtp.received
    assert received.rcpt_tos == ["seed@example.net"]
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["To"] == "seed@example.net" and str(message["Subject"]).startswith("[تجربة]")
    with Session(world.engine) as session:
        rows = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition_id)
        )
    assert rows == 3
    [event] = [e for e in world.audit() if e.action == "test_send"]
    assert event.target == f"edition:{edition_id}" and event.details["to"][0]["outcome"] == "sent"


def test_resend_failed_retries_only_the_failed_readers(world: World) -> None:
    readers = world.add_readers(6)
    failing = {readers[0], readers[3]}
    bouncing = readers[5]
    script = {a: SendResult.from_reply(554, "5.7.1 rejected by policy") for a in failing}
    script[bouncing] = SendResult.from_reply(550, "5.1.1 user unknown")
    edition_id = start_alert(world)
    first = MemoryTransport(script)
    world.drain(first)
    sweep(world.engine, world.settings, world.dispatcher)
    before = progress(world, edition_id)
    assert before["status"] == "sent"
    assert before["progress"]["counts"] == {"sent": 3, "failed": 2, "bounced": 1}  # type: ignore[index]

    answer = world.call("POST", f"/editions/{edition_id}/resend-failed", "operator")
    assert answer.status_code == 200, answer.text
    assert answer.json()["requeued"] == 2 and answer.json()["edition"]["status"] == "sending"
    second = MemoryTransport()  # the server accepts them now
    world.drain(second)
    sweep(world.engine, world.settings, world.dispatcher)

    assert sent_to(second) == Counter(failing)  # not the bounced one, not the sent ones
    after = progress(world, edition_id)
    assert after["status"] == "sent"
    assert after["progress"]["counts"] == {"sent": 5, "bounced": 1}  # type: ignore[index]
    nothing = world.call("POST", f"/editions/{edition_id}/resend-failed", "operator")
    assert nothing.json()["requeued"] == 0 and nothing.json()["edition"]["status"] == "sent"
    [event, _] = [e for e in world.audit() if e.action == "edition.resend_failed"]
    assert event.details == {"requeued": 2}
