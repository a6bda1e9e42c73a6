"""Pause and resume through the API while real Celery workers send over real SMTP."""

from __future__ import annotations

import time
from collections import Counter

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mailer import api
from mailer.auth import create_token
from mailer.sweeper import sweep
from tests.conftest import scale
from tests.support.stack import Stack
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher


def test_pause_at_30_percent_then_resume_sends_every_reader_exactly_once(stack: Stack) -> None:
    readers = scale(400, 5000)
    stack.add_readers(readers)
    stack.smtp.delay = 0.01  # slow enough to pause mid-edition
    dispatcher = CeleryDispatcher(make_celery(stack.settings))
    app = FastAPI()
    routes = api.router(stack.settings, stack.engine, dispatcher=dispatcher)
    app.include_router(routes, prefix="/api/v1")
    with Session(stack.engine) as session:
        _, editor = create_token(session, "editor")
        _, operator = create_token(session, "operator")
        session.commit()
    client = TestClient(app)

    def as_(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def done() -> int:
        answer = client.get(f"/api/v1/editions/{edition_id}", headers=as_(operator))
        return int(answer.json()["progress"]["done"])

    stack.start_worker()
    started = client.post(
        "/api/v1/alerts", headers=as_(editor), json={"story_id": stack.add_story()}
    )
    assert started.status_code == 201, started.text
    edition_id = started.json()["edition_id"]
    stack.wait_until(lambda: done() >= 0.3 * readers, 60, "30% sent")

    paused = client.post(f"/api/v1/editions/{edition_id}/pause", headers=as_(operator))
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    time.sleep(1.5)  # messages in flight finish; no new chunk is claimed
    settled = done()
    time.sleep(1.0)
    assert done() == settled < readers

    resumed = client.post(f"/api/v1/editions/{edition_id}/resume", headers=as_(operator))
    assert resumed.status_code == 200 and resumed.json()["status"] == "sending"
    stack.smtp.delay = 0
    stack.wait_until(lambda: done() == readers, 120, "every reader sent")
    sweep(stack.engine, stack.settings, dispatcher)
    stack.wait_finished(edition_id)

    received = Counter(r.rcpt_tos[0] for r in stack.smtp.received)
    assert len(received) == readers and set(received.values()) == {1}
    shown = client.get(f"/api/v1/editions/{edition_id}", headers=as_(operator)).json()
    assert shown["status"] == "sent" and shown["progress"]["counts"] == {"sent": readers}
    client.close()
