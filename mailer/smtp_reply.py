"""What an SMTP reply means for a reader's delivery: :func:`classify` is the one rule that
turns a reply into an :class:`Outcome`, and :class:`SendResult` carries it (and its text) back
from :mod:`mailer.transport`, which re-exports all of these."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})(?!\S)")
# Replies of servers that give no enhanced code but clearly mean "this mailbox does not exist".
_NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|recipient unknown|"
    r"unknown recipient|invalid recipient|mailbox (unavailable|not found|does not exist)|"
    r"(user|recipient|account) (not found|does not exist)",
    re.IGNORECASE,
)
# 5.1.7/5.1.8 are about *our* sender address: suppressing the reader for them would be wrong.
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})


class Outcome(StrEnum):
    """What a send means for the recipient's delivery row."""

    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    HARD_BOUNCE = "hard_bounce"


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code ("5.1.1") a reply text starts with, if any."""
    match = _ENHANCED.match(text)
    return match.group(1) if match else None


def classify(code: int | None, text: str) -> Outcome:
    """The one place failures are classified (Mailman's rule, plus hard bounces).

    2xx sent; 4xx, no reply (timeouts, disconnects) or anything unexpected: temporary, since
    nothing was accepted and a retry is safe. 5xx permanent, except 552 and 5.2.2 (mailbox
    full: the reader may make room). A 5.1.x status, or a 550/551/553 without one whose text
    says the user is unknown, is a hard bounce: the address itself is bad.
    """
    if code is None or code // 100 != 5:
        return Outcome.SENT if code is not None and code // 100 == 2 else Outcome.TEMPORARY
    enhanced = enhanced_status(text)
    if enhanced is not None:
        if enhanced.startswith("5.1.") and enhanced not in _SENDER_STATUSES:
            return Outcome.HARD_BOUNCE
        if enhanced == "5.2.2":
            return Outcome.TEMPORARY
    elif code in (550, 551, 553) and _NO_SUCH_USER.search(text):
        return Outcome.HARD_BOUNCE
    return Outcome.TEMPORARY if code == 552 else Outcome.PERMANENT


@dataclass(frozen=True)
class SendResult:
    """The server's answer for one recipient (or a clear description when there was none)."""

    outcome: Outcome
    code: int | None
    text: str
    enhanced: str | None
    # The session failed (connect, greeting, EHLO, STARTTLS, AUTH): nothing of the message was
    # sent, so another server may take it at once, and this one is unhealthy.
    server_fault: bool = False

    @classmethod
    def from_reply(cls, code: int, text: str | bytes) -> SendResult:
        """Build a result from a server reply, classified by :func:`classify`."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return cls(classify(code, text), code, text, enhanced_status(text))

    @classmethod
    def temporary(cls, text: str, code: int | None = None) -> SendResult:
        """A failure that says nothing about the recipient: retry later."""
        return cls(Outcome.TEMPORARY, code, text, enhanced_status(text))
