"""Thin tasks: unpack ids, call ``mailer``, map errors to retries. No logic lives here."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailer import db, feeds, inbound, schedules, transactional
from mailer.config import get_settings
from mailer.dispatch import Batch
from mailer.editions import finish_if_done
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.sweeper import sweep as sweep_database
from workers import runtime
from workers.app import app
from workers.dispatcher import CeleryDispatcher


@app.task(
    name="mailer.send_batch",
    autoretry_for=(OperationalError,),  # the database restarting: try again shortly
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=None,
)
def send_batch(edition_id: int, first_id: int, last_id: int) -> dict[str, object]:
    report = runtime.sender().send_batch(Batch(edition_id, first_id, last_id))
    with Session(db.get_engine()) as session, session.begin():
        finish_if_done(session, edition_id)
    return {"claimed": report.claimed, "outcomes": report.outcomes, "stopped": report.stopped}


@app.task(name="mailer.sweep", autoretry_for=(OperationalError,), max_retries=3)
def sweep() -> dict[str, object]:
    settings, dispatcher = get_settings(), CeleryDispatcher()
    report = sweep_database(db.get_engine(), settings, dispatcher)
    woken = transactional.sweep(db.get_engine(), settings, dispatcher)
    return {
        "transactional": woken,
        "reclaimed": report.reclaimed,
        "retried": report.retried,
        "redispatched": report.redispatched,
        "finished": report.finished,
    }


@app.task(name="mailer.schedule_tick", autoretry_for=(OperationalError,), max_retries=3)
def schedule_tick() -> dict[str, object]:
    settings = get_settings()
    service = Service(db.get_engine(), settings, CeleryDispatcher(), Renderer(settings))
    return {"editions": schedules.tick(db.get_engine(), settings, service)}


@app.task(name="mailer.poll_feeds", autoretry_for=(OperationalError,), max_retries=3)
def poll_feeds() -> dict[str, object]:
    results = feeds.poll_due(db.get_engine(), get_settings())
    return {
        "polled": len(results),
        "added": sum(r.added for r in results),
        "updated": sum(r.updated for r in results),
        "errors": sum(len(r.errors) for r in results),
    }


@app.task(
    name="mailer.poll_imap", soft_time_limit=120, autoretry_for=(OperationalError,), max_retries=3
)
def poll_imap() -> dict[str, object]:
    """Bounces and complaints from a mailbox, when one is configured (MAILER_IMAP_URL)."""
    settings = get_settings()
    if not settings.imap_url:
        return {"handled": 0}
    return {"handled": inbound.poll_imap(db.get_engine(), settings)}


# A confirmation lost to a database blip is retried until it goes: each is claimed once, so a
# retry skips those already sent.
_UNTIL_SENT: dict[str, Any] = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": None,
}


@app.task(name="mailer.send_transactional", **_UNTIL_SENT)
def send_transactional(message_id: int) -> str | None:
    """A confirmation or welcome email, through the process's servers, limits and signer."""
    return _send_transactional([message_id])[0]


@app.task(name="mailer.send_transactionals", **_UNTIL_SENT)
def send_transactionals(message_ids: list[int]) -> list[str | None]:
    """Several, one after the other (the web process gathers sign-ups into one task)."""
    return _send_transactional(message_ids)


def _send_transactional(message_ids: list[int]) -> list[str | None]:
    sender = runtime.sender()
    engine, settings = db.get_engine(), get_settings()
    return [
        transactional.send_message(
            engine, settings, sender.transport, message_id, signer=sender.signer
        )
        for message_id in message_ids
    ]


@app.task(name="mailer.forget_unconfirmed", autoretry_for=(OperationalError,), max_retries=3)
def forget_unconfirmed() -> int:
    return transactional.forget_unconfirmed(db.get_engine(), get_settings())
