"""Per-process state of a worker: one engine, one SMTP transport, one sender."""

from __future__ import annotations

from mailer import db
from mailer.config import get_settings
from mailer.sending import EditionSender
from mailer.transport import SmtpConfig, SmtpTransport

_sender: EditionSender | None = None


def sender() -> EditionSender:
    global _sender
    if _sender is None:
        settings = get_settings()
        transport = SmtpTransport(SmtpConfig.from_url(settings.smtp_url))
        _sender = EditionSender(settings, db.get_engine(), transport)
    return _sender


def reset() -> None:
    global _sender
    _sender = None


def close() -> None:
    if _sender is not None:
        _sender.transport.close()
