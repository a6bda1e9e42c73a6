"""Alerts through the API: once per story (also when two editors press at once), the right
readers on the alerts queue, and test sends to seed addresses that create no deliveries."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import Counter

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.dispatch import ALERTS_QUEUE
from mailer.models import Delivery, Edition
from tests.api.conftest import World, sent_to
from tests.support.smtp_server import ScriptedSMTPServer


def test_an_alert_reaches_instant_readers_of_its_topic_and_breaking_once(world: World) -> None:
    breaking = world.add_readers(3, topics=("breaking",))
    syria = world.add_readers(2, topics=("syria",), start=10)
    world.add_readers(1, topics=("syria",), cadence="daily", start=20)  # digest reader
    world.add_readers(1, topics=("egypt",), start=30)  # another topic
    both = world.add_readers(1, topics=("breaking", "syria"), start=40)  # one message, not two
    story_id = world.add_story(topic="syria")

    first = world.call("POST", "/alerts", "editor", json={"story_id": story_id})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["created"] and body["planned"] == 6 and body["status"] == "sending"
    assert {queue for queue, _ in world.dispatcher.sent} == {ALERTS_QUEUE}

    again = world.call("POST", "/alerts", "editor", json={"story_id": story_id})
    assert again.status_code == 200
    assert again.json()["edition_id"] == body["edition_id"] and not again.json()["created"]

    world.drain()
    assert sent_to(world.transport) == Counter(breaking + syria + both)
    shown = world.call("GET", f"/alerts/{body['edition_id']}", "editor").json()
    assert shown["progress"]["counts"] == {"sent": 6} and shown["progress"]["fraction"] == 1.0

    events = [e for e in world.audit() if e.action == "alert.trigger"]
    assert [e.details["created"] for e in events] == [True, False]
    editor = next(t for t in world.call("GET", "/tokens").json() if t["role"] == "editor")
    assert {e.actor for e in events} == {f"token:{editor['id']}:editor-bot"}


def test_an_unknown_story_is_404_and_creates_nothing(world: World) -> None:
    answer = world.call("POST", "/alerts", "editor", json={"story_id": 4242})
    assert answer.status_code == 404 and "4242" in answer.json()["detail"]
    with Session(world.engine) as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 0


def _race(world: World, story_id: int) -> list[Response]:
    """Two editors press the button at the same instant, from two connections."""
    clients = [world.client, TestClient(world.client.app)]
    barrier = threading.Barrier(2)
    answers: list[Response | None] = [None, None]

    def press(index: int) -> None:
        barrier.wait()
        answers[index] = clients[index].post(
            "/api/v1/alerts", headers=world.headers("editor"), json={"story_id": story_id}
        )

    world.headers("editor")  # create the token before the race
    threads = [threading.Thread(target=press, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    clients[1].close()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def test_two_concurrent_triggers_make_one_edition_and_one_message_per_reader(
    backend_world: World,
) -> None:
    world = backend_world
    readers = world.add_readers(25)
    story_id = world.add_story()

    answers = _race(world, story_id)

    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    assert len({a.json()["edition_id"] for a in answers}) == 1
    with Session(world.engine) as session:
        assert session.scalar(select(func.count()).select_from(Edition)) == 1
        rows = session.scalar(select(func.count()).select_from(Delivery))
    assert rows == 25
    world.drain()
    world.drain()  # a duplicated wake-up, if any, finds nothing left to claim
    assert sent_to(world.transport) == Counter(readers)


def test_a_test_send_goes_first_to_seed_addresses_and_creates_no_deliveries(
    smtp_world: World, smtp: ScriptedSMTPServer
) -> None:
    world = smtp_world
    readers = world.add_readers(3, name="سلمى")
    story_id = world.add_story("عاجل: زلزال")
    seeds = ["desk@example.com", "chief@example.org"]

    answer = world.call("POST", "/alerts", "editor", json={"story_id": story_id, "test_to": seeds})
    assert answer.status_code == 201, answer.text
    assert [t["outcome"] for t in answer.json()["tests"]] == ["sent", "sent"]
    edition_id = answer.json()["edition_id"]

    assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(seeds)
    message = email.message_from_bytes(smtp.received[0].data, policy=email.policy.default)
    assert str(message["Subject"]).startswith("[تجربة] ") and "زلزال" in str(message["Subject"])
    assert message["Auto-Submitted"] == "auto-generated"
    assert len(set(smtp.message_ids())) == 2  # each test its own Message-ID
    assert sorted(world.recipients(edition_id)) == sorted(readers)  # no seed among them

    events = world.audit()
    tests = [e for e in events if e.action == "test_send"]
    assert len(tests) == 1 and tests[0].target == f"story:{story_id}"
    assert [t["address"] for t in tests[0].details["to"]] == seeds
    assert events.index(tests[0]) < events.index(
        next(e for e in events if e.action == "alert.trigger")
    )

    # Pressed again: the alert exists, so no second test goes out.
    again = world.call("POST", "/alerts", "editor", json={"story_id": story_id, "test_to": seeds})
    assert again.status_code == 200 and again.json()["tests"] == []
    assert len(smtp.received) == 2


def test_a_test_only_send_plans_nothing(smtp_world: World, smtp: ScriptedSMTPServer) -> None:
    world = smtp_world
    world.add_readers(2)
    story_id = world.add_story()
    smtp.set_rule(
        ScriptedSMTPServer.refuse(550, "5.1.1 no such user", recipients={"x@example.com"})
    )

    answer = world.call(
        "POST",
        "/alerts/test",
        "editor",
        json={"story_id": story_id, "to": ["d@example.com", "x@example.com"]},
    )
    assert answer.status_code == 200
    assert [(t["address"], t["outcome"], t["code"]) for t in answer.json()] == [
        ("d@example.com", "sent", 250),
        ("x@example.com", "hard_bounce", 550),
    ]
    assert world.call("GET", f"/alerts?story_id={story_id}", "editor").json() == []
    bad = world.call("POST", "/alerts/test", "editor", json={"story_id": story_id, "to": ["a@b@c"]})
    assert bad.status_code == 422
