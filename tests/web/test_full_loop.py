"""The whole reader loop over real connections: the app under uvicorn on a TCP port, talked to
with httpx; PostgreSQL; an SMTP server receiving every message over SMTP.

subscribe → the confirmation email arrives → its link's page and button confirm → the welcome
and then an alert arrive → a POST to the List-Unsubscribe URL of that alert's header with
``List-Unsubscribe=One-Click`` → unsubscribed → the next alert does not arrive. Link scanners
fetching the confirm and unsubscribe URLs before the reader acts change nothing.

The workers' part is played in-process, as the Celery tasks do it: the transactional sweeper
wakes queued messages and :func:`send_message` sends them; alerts go through
:class:`Service` and :class:`EditionSender` over a real :class:`SmtpTransport`.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from mailer import transactional
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.rendering import Renderer
from mailer.sending import EditionSender
from mailer.service import Service
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.transport import SmtpConfig, SmtpTransport
from mailer.web import create_app
from tests.support.smtp_server import ScriptedSMTPServer
from tests.web.site import CSRF, drop_pg_database, pg_url

READER = "layla@example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    base: str
    settings: Settings
    engine: Engine
    smtp: ScriptedSMTPServer
    transport: SmtpTransport

    def work(self) -> None:
        """What the workers would do now: wake and send every queued transactional message."""
        woken = MemoryDispatcher()
        transactional.sweep(self.engine, self.settings, woken)
        for _, message_id in woken.messages:
            transactional.send_message(self.engine, self.settings, self.transport, message_id)

    def alert(self, title: str) -> int:
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(title=title, url=f"https://news.example.com/{title}", topic="syria"),
            )
            session.commit()
            story_id = story.id
        batches = MemoryDispatcher()
        started = Service(
            self.engine, self.settings, batches, Renderer(self.settings)
        ).trigger_alert(story_id)
        sender = EditionSender(self.settings, self.engine, self.transport)
        for _, batch in batches.sent:
            sender.send_batch(batch)
        return started.planned

    def mailbox(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(r.data, policy=email.policy.default)  # type: ignore[misc]
            for r in self.smtp.received
            if READER in r.rcpt_tos
        ]

    def status(self) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT status FROM subscribers WHERE email = :e"), {"e": READER}
                ).scalar_one()
            )

    def subscriptions(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM subscriptions s JOIN subscribers r "
                        "ON r.id = s.subscriber_id WHERE r.email = :e"
                    ),
                    {"e": READER},
                ).scalar_one()
            )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    database = pg_url()
    smtp = ScriptedSMTPServer()
    smtp.start()
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        database_url=database,
        base_url=f"http://127.0.0.1:{port}",
        smtp_url=f"{smtp.url}?timeout=5&connect_timeout=5",
        secret_keys="loop-key",
        hash_key="loop-hash",
        dispatcher="mailer.dispatch:NullDispatcher",  # the sweeper wakes the messages…
        stall_seconds=0,  # …as soon as they are queued
        limiter="mailer.ratelimit:MemoryLimiter",
    )
    upgrade(settings.database)
    engine = make_engine(settings.database)
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    transport = SmtpTransport(SmtpConfig.from_url(settings.smtp_url))
    try:
        yield Running(settings.base_url, settings, engine, smtp, transport)
    finally:
        transport.close()
        server.should_exit = True
        thread.join(10)
        smtp.stop()
        engine.dispose()
        drop_pg_database(database)


def text_link(message: EmailMessage, kind: str) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.findall(rf"http://127\.0\.0\.1:\d+/{kind}/\S+", body.get_content())
    assert found, body.get_content()
    return str(found[-1])


def test_subscribe_confirm_alert_one_click_unsubscribe(running: Running) -> None:
    with httpx.Client(base_url=running.base, timeout=10) as browser:
        form = browser.get("/subscribe")
        assert form.status_code == 200 and 'dir="rtl"' in form.text
        token = CSRF.search(form.text)
        assert token is not None
        answer = browser.post(
            "/subscribe",
            data={
                "csrf_token": token.group(1),
                "email": READER,
                "name": "ليلى",
                "topics": ["breaking"],
                "cadence": "instant",
                "website": "",
            },
        )
        assert answer.status_code == 200 and "تحقق من بريدك" in answer.text
        assert running.status() == "pending"

        running.work()
        (confirmation,) = running.mailbox()  # received by the SMTP server
        confirm_url = text_link(confirmation, "confirm")
        html = confirmation.get_body(("html",))
        assert html is not None and confirm_url in html.get_content()

        # Scanners fetch both links of the confirmation before the reader does: no change.
        header = str(confirmation["List-Unsubscribe"])
        scanned_unsubscribe = re.search(r"<(http://[^>]+)>", header)
        assert scanned_unsubscribe is not None
        with httpx.Client(timeout=10) as scanner:
            assert scanner.get(confirm_url).status_code == 200
            assert scanner.get(scanned_unsubscribe.group(1)).status_code == 200
        assert running.status() == "pending" and running.subscriptions() == 1

        page = browser.get(confirm_url)
        assert page.status_code == 200 and "<form" in page.text
        button = CSRF.search(page.text)
        assert button is not None
        confirmed = browser.post(confirm_url, data={"csrf_token": button.group(1)})
        assert confirmed.status_code == 200 and "تم تأكيد اشتراكك" in confirmed.text
        assert running.status() == "active"

    running.work()
    assert "أهلاً بك" in str(running.mailbox()[-1]["Subject"])
    assert running.alert("first") == 1
    alert = running.mailbox()[-1]
    assert str(alert["Subject"]).startswith("عاجل")
    assert alert["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.search(r"<(http://[^>]+)>", str(alert["List-Unsubscribe"]))
    assert found is not None
    unsubscribe_url = found.group(1)

    with httpx.Client(timeout=10) as mail_client:  # no cookies, no CSRF token: RFC 8058
        assert mail_client.get(unsubscribe_url).status_code == 200  # a scanner first
        assert running.status() == "active" and running.subscriptions() == 1
        body = b"List-Unsubscribe=One-Click"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        first = mail_client.post(unsubscribe_url, content=body, headers=form)
        assert first.status_code == 200
        assert running.status() == "unsubscribed" and running.subscriptions() == 0
        again = mail_client.post(unsubscribe_url, content=body, headers=form)
        assert again.status_code == 200 and running.status() == "unsubscribed"

    received = len(running.smtp.received)
    assert running.alert("second") == 0
    assert len(running.smtp.received) == received  # the next alert does not arrive
    assert len(running.mailbox()) == 3  # confirmation, welcome, first alert
