"""Bounce, complaint and auto-reply parsing (DESIGN §4): pure, no database, never raises.

:func:`parse` turns one inbound message into :class:`BounceReport` objects, one per failed
recipient. The formats are tried from most to least certain (see :mod:`mailer.bounce_formats` and
:mod:`mailer.bounce_heuristics`):
ARF complaint, RFC 3464 DSN, Amazon SES JSON, RFC 3834 auto-reply, hand-written bounces. What
hard and soft mean is documented in :mod:`mailer.bounce_text`.

Each report also carries our VERP local part (``bounces+<delivery id>-<hmac>``) when the
message was addressed to one, or quotes one from the returned original. The parser does not
check its HMAC: it has no keys. :func:`mailer.inbound.apply` does, and ignores forgeries.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import dataclass
from email.message import Message
from typing import Literal

from mailer.bounce_formats import (
    Finding,
    auto_reply_reason,
    delivery_status,
    feedback_report,
    sender_address,
    ses_notification,
)
from mailer.bounce_heuristics import hand_written, looks_like_bounce
from mailer.bounce_text import header, notification_text, one_line

__all__ = ["KINDS", "BounceReport", "Kind", "find_verp", "parse"]

log = logging.getLogger(__name__)

Kind = Literal["hard", "soft", "complaint", "auto-reply", "not-bounce"]
KINDS: tuple[Kind, ...] = ("hard", "soft", "complaint", "auto-reply", "not-bounce")

#: Bytes of a message looked at: the report is at the start; a huge returned attachment at the
#: end only costs parsing time (an attacker could send a 50 MB "bounce").
MAX_BYTES = 2 * 1024 * 1024

#: Reports per message: we send each message to one reader, so a "bounce" naming thousands of
#: addresses is noise or an attack, and each report costs a database transaction.
MAX_REPORTS = 50

_VERP = re.compile(rb"bounces\+\d{1,19}-[0-9a-fA-F]{12}(?=@)")
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


@dataclass(frozen=True)
class BounceReport:
    """What one inbound message says about one recipient of ours."""

    recipient: str | None
    """The bounced address (domain lower-cased), or the complainer for ARF."""
    kind: Kind
    status: str | None
    """RFC 3463 enhanced status ("5.1.1"), or "5.0.0"/"4.0.0" from a bare SMTP reply code."""
    reason: str
    """The diagnostic text, on one line, at most 500 characters."""
    verp: str | None
    """Our VERP local part, if the message was addressed to one or quotes one (unverified)."""

    def as_dict(self) -> dict[str, str | None]:
        """The JSON line of ``mailer inbound parse``."""
        return {
            "recipient": self.recipient,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "verp": self.verp,
        }


def find_verp(msg: Message | None, data: bytes, envelope_to: str | None = None) -> str | None:
    """Our VERP local part: envelope recipient first, then delivery headers, then anywhere.

    "Anywhere" covers the returned original (its Return-Path is our envelope sender) and the
    DSN's ``X-Postfix-Sender``/``Original-Envelope-Id`` fields.
    """
    sources = [envelope_to or ""]
    if msg is not None:
        sources += [header(msg, name) for name in _ENVELOPE_HEADERS]
    for source in sources:
        match = _VERP.search(source.encode("utf-8", "replace"))
        if match:
            return match.group(0).decode().lower()
    match = _VERP.search(data)
    return match.group(0).decode().lower() if match else None


def parse(data: bytes, *, envelope_to: str | None = None) -> list[BounceReport]:
    """Every recipient a message reports on (at least one report; never raises).

    ``envelope_to`` is the SMTP envelope recipient, when the caller knows it: the most reliable
    place to find our VERP address.
    """
    try:
        data = bytes(data[:MAX_BYTES])
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        verp = find_verp(msg, data, envelope_to)
        findings = _findings(msg, data, envelope_to, verp)
    except Exception as exc:  # hostile input must never take the intake down
        log.warning("bounce parser failed on a %d-byte message", len(data), exc_info=True)
        return [BounceReport(None, "not-bounce", None, one_line(f"unparseable: {exc!r}"), None)]
    return [
        BounceReport(f.recipient, _kind(f.kind), f.status, one_line(f.reason), verp)
        for f in findings[:MAX_REPORTS]
    ]


def _kind(value: str) -> Kind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise ValueError(f"unknown bounce kind {value!r}")


def _findings(
    msg: Message, data: bytes, envelope_to: str | None, verp: str | None
) -> list[Finding]:
    found = feedback_report(msg) or delivery_status(msg, data) or ses_notification(msg)
    if found:
        return found
    if header(msg, "X-Apple-Unsubscribe"):
        return [Finding(None, "not-bounce", None, "list unsubscribe request (mailto)")]
    auto = auto_reply_reason(msg)
    bounce_like = looks_like_bounce(msg, notification_text(msg))
    # Bounces carry Auto-Submitted: auto-replied too (Postfix, Exim): a mail system's failure
    # report wins over the header; a person's vacation message does not get that far.
    if auto and not bounce_like:
        return [Finding(sender_address(msg), "auto-reply", None, auto)]
    found = hand_written(msg, data, envelope_to, have_verp=verp is not None)
    if found:
        return found
    if auto:
        return [Finding(sender_address(msg), "auto-reply", None, auto)]
    why = "a bounce that names no recipient" if bounce_like else "not a bounce or complaint"
    return [Finding(None, "not-bounce", None, f"{why}: {header(msg, 'Subject')}")]
