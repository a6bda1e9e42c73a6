"""Per-process state of a worker: one engine, one pool of SMTP connections, one sender."""

from __future__ import annotations

from mailer import db
from mailer.config import get_settings
from mailer.sending import EditionSender
from mailer.servers import ServerPool, load_servers, record_health
from mailer.throttle import Throttle, load_store

_sender: EditionSender | None = None


def sender() -> EditionSender:
    """Built on first use, after the fork: connections are never shared with the parent."""
    global _sender
    if _sender is None:
        settings = get_settings()
        engine = db.get_engine()
        throttle = Throttle(load_store(settings), settings)
        pool = ServerPool(load_servers(engine, settings), throttle, on_health=record_health(engine))
        _sender = EditionSender(settings, engine, pool)
    return _sender


def reset() -> None:
    global _sender
    _sender = None


def close() -> None:
    if _sender is not None:
        _sender.transport.close()
