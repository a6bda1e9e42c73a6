"""Bounces that mail servers write by hand: Exim, qmail, Exchange 2003, Gmail's and Yahoo's
old formats, and the many others without an RFC 3464 report.

Who failed: X-Failed-Recipients when the server sets it; else flufl.bounce, Mailman's
detector library; else the addresses the notification text names (not those of the bounce's
own sender and receiver, not the help desk it tells you to contact); else the one To of the
returned original — our messages have exactly one recipient. How: the status codes and
diagnostic text on the lines about each address (:func:`mailer.bounce_text.classify`).

All of it only for messages that look like a mail system's failure report: a person's mail
that happens to name addresses is not a bounce.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
from email.message import Message

from flufl.bounce import all_failures

from mailer.bounce_formats import Finding, attached, sender_address
from mailer.bounce_text import (
    ADDRESS,
    DELAYED,
    HEADER_LINE,
    PERMANENT,
    REPLIED,
    Severity,
    any_cue,
    classify,
    header,
    notification_text,
    one_line,
    status_in,
    valid_address,
    window_about,
)

__all__ = ["hand_written", "looks_like_bounce", "sender_address"]

#: The start of a message flufl.bounce sees: the notification is at the start, and its
#: line-by-line detectors would spend seconds on a multi-megabyte attachment.
FLUFL_BYTES = 128 * 1024


class _QuietFlufl(logging.Filter):
    """flufl.bounce logs a traceback before re-raising a detector's error; we handle it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


logging.getLogger("flufl.bounce").addFilter(_QuietFlufl())


_DAEMON = re.compile(
    r"^(mailer-?daemon|postmaster|mail-?daemon|mdaemon|bounces?|mail delivery|"
    r"mail administrator|mailadmin|noreply-dmarc)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|notification|problem|has failed)|"
    r"failure notice|returned mail|mail delivery failed|could not be delivered|non-?deliver|"
    r"not delivered|delivery report|mail system error|warning: could not send|delayed mail|"
    r"rejected|bounce|nicht zustellbar|non remis|تعذر|فشل|لم يتم|غير قابل",
    re.IGNORECASE,
)
_BOUNCE_TEXT = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|did not reach|"
    r"delivery (to the following recipients? )?(has )?failed|permanent (error|failure)|"
    r"unable to deliver|was not delivered|wasn't able to deliver|returned to sender|"
    r"تعذر تسليم|لم يتم تسليم|فشل تسليم",
    re.IGNORECASE,
)
# Lines that name an address to write to for help, not a failed recipient.
_ASIDE = re.compile(r"contact|assistance|please|for help|questions", re.IGNORECASE)
_OWN_LOCAL = re.compile(r"^(postmaster|mailer-daemon|abuse|root|noreply|no-reply)$", re.IGNORECASE)


def looks_like_bounce(msg: Message, text: str) -> bool:
    """Written by a mail system about a failure (rather than by a person, or a vacation bot)."""
    sender = header(msg, "From")
    local = sender.rpartition("<")[2].split("@")[0].strip(' "')
    return bool(
        _DAEMON.search(local)
        or _DAEMON.search(sender)
        or _BOUNCE_SUBJECT.search(header(msg, "Subject"))
        or header(msg, "X-Failed-Recipients")
        or msg.get_content_type() == "multipart/report"
        or _BOUNCE_TEXT.search(text[:3000])
    )


def _own_addresses(msg: Message, envelope_to: str | None) -> set[str]:
    """Addresses of the bounce's own sender and receiver: never the failed recipient.

    Not X-Original-To: some MTAs (DragonFly) put the failed recipient there.
    """
    names = ("To", "From", "Reply-To", "Sender", "Return-Path", "Delivered-To")
    found = {envelope_to or ""}
    for name in names:
        found.update(m.group(0) for m in ADDRESS.finditer(header(msg, name)))
    return {a.lower() for a in found}


def _message_ids(data: bytes) -> set[str]:
    found = re.findall(rb"(?im)^(?:message-id|in-reply-to|references)\s*:\s*(.{0,998})", data)
    return {m.lower() for v in found for m in re.findall(r"[^<>\s]+@[^<>\s]+", v.decode("latin-1"))}


def _returned_to(msg: Message, text: str) -> list[str]:
    """The To of the returned original: our messages have exactly one, the reader."""
    original = attached(msg)
    value = header(original, "To") if original is not None else ""
    if not value:
        tail = text[text.lower().find("\nto:") :] if "\nto:" in text.lower() else ""
        value = tail[4:].split("\n", 1)[0] if tail else ""
    found = [a for m in ADDRESS.finditer(value) if (a := valid_address(m.group(0)))]
    return found if len(found) == 1 else []


def _candidates(msg: Message, data: bytes, text: str, own: set[str]) -> tuple[list[str], set[str]]:
    """Failed recipients named by X-Failed-Recipients, flufl.bounce, or the text itself."""
    listed = [
        a
        for v in re.split(r"[,\s]+", header(msg, "X-Failed-Recipients"))
        if (a := valid_address(v))
    ]
    if listed:
        return listed, set()
    asides = {
        m.group(0).lower()
        for ln in text.splitlines()
        if _ASIDE.search(ln)
        for m in ADDRESS.finditer(ln)
    }
    excluded = own | _message_ids(data) | asides
    if len(data) > FLUFL_BYTES:  # its detectors read every line: keep hostile input cheap
        msg = email.message_from_bytes(data[:FLUFL_BYTES], policy=email.policy.compat32)
    try:
        soft, hard = all_failures(msg)
    except Exception:  # flufl.bounce's heuristics are not written for hostile input
        soft, hard = frozenset(), frozenset()
    found: list[str] = []
    temporary: set[str] = set()
    for raw, is_soft in [(a, False) for a in sorted(hard)] + [(a, True) for a in sorted(soft)]:
        address = valid_address(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)
        if address and address.lower() not in excluded and address.lower() in text.lower():
            found.append(address)
            if is_soft:
                temporary.add(address)
    if found:
        return found, temporary
    for line in text.splitlines():
        if HEADER_LINE.match(line) or _ASIDE.search(line):
            continue
        for match in ADDRESS.finditer(line):
            address = valid_address(match.group(0))
            if (
                address
                and address.lower() not in excluded
                and address not in found
                and not _OWN_LOCAL.match(address.split("@")[0])
                and not address.lower().startswith("bounces+")
            ):
                found.append(address)
    return found[:20], temporary


def _reason(window: str) -> str:
    """The diagnostic lines of a window: those with the server's reply, else what follows."""
    lines = [ln for ln in window.splitlines() if re.search(r"\w", ln)]
    coded = [ln for ln in lines if REPLIED.search(ln)] or [ln for ln in lines if status_in(ln)]
    return one_line(" ".join(coded[:2] or lines[:4]))


def hand_written(
    msg: Message, data: bytes, envelope_to: str | None, *, have_verp: bool
) -> list[Finding]:
    """Non-standard bounces: recipients from the text, hard/soft from the codes near them."""
    full = notification_text(msg, cut=False)
    text = notification_text(msg)
    if not looks_like_bounce(msg, text):
        return []
    recipients, temporary = _candidates(msg, data, text, _own_addresses(msg, envelope_to))
    recipients = recipients or _returned_to(msg, full)
    overall: Severity = "soft" if DELAYED.search(header(msg, "Subject")) else "hard"
    if not PERMANENT.search(text) and DELAYED.search(text):
        overall = "soft"
    findings = []
    for recipient in recipients:
        window = window_about(text, recipient, recipients)
        status = status_in(window) or status_in(text)
        default = "soft" if recipient in temporary else overall
        # Where the lines about this recipient say nothing either way, the whole text may.
        context = window if status_in(window) or any_cue(window) else text
        kind = classify(status, context, default=default)
        findings.append(Finding(recipient, kind, status, _reason(window) or one_line(text)))
    if not findings and have_verp:
        # Our VERP address says which delivery this is about, even without a recipient.
        status = status_in(text)
        findings.append(
            Finding(None, classify(status, text, default="soft"), status, one_line(text))
        )
    return findings
