"""One-click unsubscribe (RFC 8058) from the List-Unsubscribe header of a really built email."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import Subscriber, Subscription
from mailer.rendering import Renderer
from mailer.sending import EditionSender
from mailer.service import Service
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from mailer.transport import MemoryTransport
from mailer.web import create_app


class World:
    def __init__(self, tmp: Path) -> None:
        self.settings = Settings(
            data_dir=tmp, base_url="https://news.example.com", secret_keys="k1", hash_key="h"
        )
        upgrade(self.settings.database)
        self.engine = make_engine(self.settings.database)
        with Session(self.engine) as session:
            ensure_topics(session)
            session.commit()
        rows = [
            ReaderRow(line=1, email="amal@example.com", topics=("breaking",)),
            ReaderRow(line=2, email="badr@example.com", topics=("breaking",)),
        ]
        import_readers(self.engine, rows, self.settings, consented=True)
        digest = [ReaderRow(line=1, email="amal@example.com", topics=("syria",), cadence="daily")]
        import_readers(self.engine, digest, self.settings, consented=True)
        self.dispatcher = MemoryDispatcher()
        self.service = Service(self.engine, self.settings, self.dispatcher, Renderer(self.settings))
        self.transport = MemoryTransport()
        self.sender = EditionSender(self.settings, self.engine, self.transport)
        self.client = TestClient(create_app(self.settings))

    def alert(self, title: str) -> int:
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(title=title, url=f"https://news.example.com/{title}", topic="syria"),
            )
            session.commit()
            story_id = story.id
        started = self.service.trigger_alert(story_id)
        for _, batch in self.dispatcher.sent:
            self.sender.send_batch(batch)
        self.dispatcher.sent.clear()
        return started.planned

    def link_for(self, address: str) -> str:
        data = next(d for _, rcpt, d in self.transport.sent if rcpt == address)
        message = email.message_from_bytes(data, policy=email.policy.default)
        match = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
        assert match and message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        return match.group(1).removeprefix("https://news.example.com")

    def subscriptions(self, address: str) -> set[tuple[str, int]]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(Subscription.cadence, Subscription.topic_id)
                .join(Subscriber)
                .where(Subscriber.email == address)
            ).all()
        return {(cadence, topic) for cadence, topic in rows}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path)
    yield built
    built.engine.dispose()


def test_one_click_post_ends_alerts_and_the_next_alert_skips_the_reader(world: World) -> None:
    assert world.alert("first") == 2
    path = world.link_for("amal@example.com")
    before = world.subscriptions("amal@example.com")

    scanner = world.client.get(path)  # a link scanner: shows a button, changes nothing
    assert scanner.status_code == 200 and "<form" in scanner.text
    assert world.subscriptions("amal@example.com") == before

    answer = world.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    left = world.subscriptions("amal@example.com")
    assert all(cadence != "instant" for cadence, _ in left)  # alerts ended…
    assert any(cadence == "daily" for cadence, _ in left)  # …the digest kept

    again = world.client.post(path, files={"List-Unsubscribe": (None, "One-Click")})  # multipart
    assert again.status_code == 200 and world.subscriptions("amal@example.com") == left

    world.transport.sent.clear()
    assert world.alert("second") == 1
    assert [rcpt for _, rcpt, _ in world.transport.sent] == ["badr@example.com"]


def test_everything_unsubscribes_the_reader(world: World) -> None:
    world.alert("first")
    path = world.link_for("amal@example.com")
    assert world.client.post(path, data={"scope": "all"}).status_code == 200
    assert world.subscriptions("amal@example.com") == set()
    with Session(world.engine) as session:
        status = session.scalar(
            select(Subscriber.status).where(Subscriber.email == "amal@example.com")
        )
    assert status == "unsubscribed"


def test_tampered_or_foreign_tokens_change_nothing(world: World) -> None:
    world.alert("first")
    path = world.link_for("amal@example.com")
    before = world.subscriptions("amal@example.com")
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    for bad in (tampered, "/unsubscribe/not-a-token"):
        answer = world.client.post(bad, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 400 and "غير صالح" in answer.text
    other_key = Settings(data_dir=world.settings.data_dir, secret_keys="someone-else")
    foreign = TestClient(create_app(other_key)).post(path, data={"List-Unsubscribe": "One-Click"})
    assert foreign.status_code == 400
    assert world.subscriptions("amal@example.com") == before


def test_links_signed_with_a_rotated_key_still_work(world: World) -> None:
    world.alert("first")
    path = world.link_for("amal@example.com")
    rotated = Settings(data_dir=world.settings.data_dir, secret_keys="k2,k1", hash_key="h")
    answer = TestClient(create_app(rotated)).post(path, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert all(cadence != "instant" for cadence, _ in world.subscriptions("amal@example.com"))
