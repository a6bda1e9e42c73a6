"""Inbound mail: bounces, complaints and ``mailto:`` unsubscribes, from SMTP or IMAP.

Two intakes feed :func:`handle_message`: an SMTP server for the bounce domain
(:func:`start_intake`, ``mailer inbound serve``) and an IMAP mailbox (:func:`poll_imap`,
``mailer inbound poll``). A message is either a List-Unsubscribe ``mailto:`` request
(``unsubscribe@<envelope domain>``, the signed token in the Subject), which ends the
subscription that email was sent for, or it is parsed (:mod:`mailer.bounces`) and each report
applied (:mod:`mailer.bounce_apply`, which documents what hard, soft and complaint change).

Nothing is lost on trouble: the SMTP intake answers 451 (the sender retries) and the IMAP
poller leaves the message unseen (the next pass retries) when the database fails.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import imaplib
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine

from mailer.bounce_apply import SEVERITY, Applied, apply
from mailer.bounce_text import header
from mailer.bounces import BounceReport, parse
from mailer.config import Settings
from mailer.models import utcnow
from mailer.readers import read_unsubscribe_token, unsubscribe
from mailer.sink import SinkController, serve_until_stopped
from mailer.tokens import BadToken, Tokens

__all__ = [
    "Applied",
    "ImapClient",
    "apply",
    "handle_message",
    "poll_imap",
    "run_intake",
    "start_intake",
]

log = logging.getLogger(__name__)

SERVER_HOSTNAME = "mailer-inbound.localhost"
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# itsdangerous tokens: URL-safe base64 payload and signature joined by dots.
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+){1,2}")


# -- one message -------------------------------------------------------------------------------


def _unsubscribe_request(
    engine: Engine, settings: Settings, data: bytes, envelope_to: str | None
) -> Applied | None:
    """The List-Unsubscribe ``mailto:unsubscribe@<envelope domain>?subject=<token>``, if it is."""
    msg = email.message_from_bytes(data[:65536], policy=email.policy.compat32)
    target = f"unsubscribe@{settings.envelope_domain}".lower()
    if target not in (envelope_to or header(msg, "To")).lower():
        return None
    report = BounceReport(None, "not-bounce", None, "list unsubscribe request (mailto)", None)
    tokens = Tokens(settings)
    for candidate in _TOKEN.findall(header(msg, "Subject")):
        try:
            scope = read_unsubscribe_token(tokens, candidate)
        except BadToken:
            continue
        unsubscribe(engine, scope, everything=False)
        log.info("mailto unsubscribe: reader %s, %s", scope.subscriber_id, scope.cadence)
        return Applied(report, None, "unsubscribed")
    return Applied(report, None, "ignored:no valid unsubscribe token in the subject")


def handle_message(
    engine: Engine,
    settings: Settings,
    data: bytes,
    *,
    envelope_to: str | None,
    now: Callable[[], datetime] = utcnow,
) -> list[Applied]:
    """Everything one inbound message changes: an unsubscribe, or each report applied."""
    request = _unsubscribe_request(engine, settings, data, envelope_to)
    if request is not None:
        return [request]
    reports = parse(data, envelope_to=envelope_to)
    # One VERP address is one delivery to one reader: only its most severe report is applied,
    # so a DSN naming a forwarded address twice (or "delayed" and "failed") counts once.
    worst: dict[str, BounceReport] = {}
    for report in reports:
        if report.verp and report.kind in SEVERITY:
            kept = worst.get(report.verp)
            if kept is None or SEVERITY[report.kind] > SEVERITY[kept.kind]:
                worst[report.verp] = report
    applied = []
    for report in reports:
        if report.verp and report.kind in SEVERITY and worst[report.verp] is not report:
            applied.append(Applied(report, None, "ignored:another report for this delivery"))
        else:
            applied.append(apply(engine, settings, report, now=now))
    return applied


# -- SMTP intake -------------------------------------------------------------------------------


class IntakeHandler:
    """aiosmtpd handler: accepts mail for the bounce domain only, and applies it."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        # Not an open relay, and not a sink for anyone's mail: only our own domain.
        if address.rpartition("@")[2].lower() != self.settings.envelope_domain.lower():
            return "550 5.7.1 relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or envelope.content or b"")
        loop = asyncio.get_running_loop()
        try:
            for rcpt in envelope.rcpt_tos:
                # The database work runs in a thread: the event loop keeps serving others.
                await loop.run_in_executor(None, self._handle, data, rcpt)
        except Exception:
            log.exception("inbound message from %s could not be applied", envelope.mail_from)
            return "451 4.3.0 cannot process the message now, try again later"
        return "250 2.0.0 OK"

    def _handle(self, data: bytes, rcpt: str) -> None:
        handle_message(self.engine, self.settings, data, envelope_to=rcpt)


def start_intake(host: str, port: int, engine: Engine, settings: Settings) -> SinkController:
    """Start the intake in a background thread; ``.port`` is the bound port, ``.stop()`` ends it.

    Port 0 picks a free port (the sink's controller reads the bound one back).
    """
    controller = SinkController(
        IntakeHandler(engine, settings),
        hostname=host,
        port=port,
        server_hostname=SERVER_HOSTNAME,
        enable_SMTPUTF8=True,  # DSNs about Arabic addresses (RFC 6533) are 8-bit
        data_size_limit=MAX_MESSAGE_BYTES,
    )
    controller.start()
    log.info("inbound intake for @%s on %s:%s", settings.envelope_domain, host, controller.port)
    return controller


def run_intake(
    host: str,
    port: int,
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event | None = None,
) -> None:
    """Run the intake until SIGTERM or SIGINT (or until ``stop`` is set)."""
    serve_until_stopped(start_intake(host, port, engine, settings), stop)


# -- IMAP poller -------------------------------------------------------------------------------


class ImapClient(Protocol):
    """The few :class:`imaplib.IMAP4` methods the poller uses (the test seam)."""

    def login(self, user: str, password: str) -> Any: ...
    def select(self, mailbox: str = ...) -> Any: ...
    def uid(self, command: str, *args: Any) -> tuple[str, list[Any]]: ...
    def expunge(self) -> Any: ...
    def logout(self) -> Any: ...


ClientFactory = Callable[[str, int], ImapClient]


def imap_target(url: str) -> tuple[bool, str, int, str, str, str]:
    """(TLS, host, port, user, password, mailbox) of ``imaps://user:pass@host[:port]/BOX``."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname:
        raise ValueError("MAILER_IMAP_URL must look like imaps://user:password@host/INBOX")
    secure = parts.scheme == "imaps"
    return (
        secure,
        parts.hostname,
        parts.port or (993 if secure else 143),
        unquote(parts.username or ""),
        unquote(parts.password or ""),
        unquote(parts.path.lstrip("/")) or "INBOX",
    )


def poll_imap(
    engine: Engine,
    settings: Settings,
    client_factory: ClientFactory | None = None,
    *,
    delete: bool = False,
) -> int:
    """Handle every unseen message of the mailbox once; returns how many were handled.

    A handled message is marked ``\\Seen`` (and deleted if ``delete``). One whose handling
    fails stays unseen, so the next pass tries it again.
    """
    secure, host, port, user, password, mailbox = imap_target(settings.imap_url)
    if client_factory is None:
        client_factory = imaplib.IMAP4_SSL if secure else imaplib.IMAP4
    client = client_factory(host, port)
    handled = 0
    try:
        client.login(user, password)
        client.select(mailbox)
        status, found = client.uid("SEARCH", "UNSEEN")
        uids = found[0].split() if status == "OK" and found and found[0] else []
        for uid in uids:
            status, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            data = next(
                (bytes(item[1]) for item in fetched if isinstance(item, tuple) and len(item) > 1),
                None,
            )
            if status != "OK" or data is None:
                continue
            try:
                handle_message(engine, settings, data, envelope_to=None)
            except Exception:
                log.exception("IMAP message %r could not be applied; left unseen", uid)
                continue
            client.uid("STORE", uid, "+FLAGS", "(\\Seen \\Deleted)" if delete else "(\\Seen)")
            handled += 1
        if delete and handled:
            client.expunge()
    finally:
        try:
            client.logout()
        except Exception:  # the connection may already be gone; nothing to do about it
            log.debug("IMAP logout failed", exc_info=True)
    return handled


def poll_forever(
    engine: Engine, settings: Settings, interval: float, *, delete: bool = False
) -> None:
    """``mailer inbound poll --loop``: a pass every ``interval`` seconds; errors are logged."""
    while True:
        try:
            count = poll_imap(engine, settings, delete=delete)
            log.info("IMAP pass handled %d message(s)", count)
        except (OSError, imaplib.IMAP4.error) as exc:
            log.warning("IMAP pass failed: %s", exc)
        time.sleep(interval)
