"""The standard formats the bounce parser understands, from most to least certain.

* RFC 5965 ARF feedback reports (and Hotmail's older JMRP forwards) → complaints;
* RFC 3464 delivery status notifications (and RFC 6533 global ones), also when broken MIME
  hides the status part;
* Amazon SES notifications mailed as JSON;
* RFC 3834 auto-replies, recognised so that they are ignored.

Bounces that servers write by hand are :mod:`mailer.bounce_heuristics`. Every detector returns
:class:`Finding` objects, or ``None`` when the format does not apply.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message
from typing import Any

from mailer.bounce_text import (
    ADDRESS,
    Severity,
    classify,
    decode_bytes,
    header,
    notification_text,
    one_line,
    part_text,
    refine,
    status_in,
    valid_address,
    walk,
    window_about,
)


@dataclass(frozen=True)
class Finding:
    recipient: str | None
    kind: str
    status: str | None
    reason: str


_STATUS_TYPES = (
    "message/delivery-status",
    "message/global-delivery-status",  # RFC 6533, for SMTPUTF8 (e.g. Arabic) addresses
    "text/delivery-status",
)
# The returned original (RFC 6533 adds the global types for SMTPUTF8 messages).
_ORIGINAL_TYPES = (
    "message/rfc822",
    "text/rfc822-headers",
    "message/global",
    "message/global-headers",
)
_DSN_FIELD = re.compile(r"^final-recipient\s*:", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(r"^([A-Za-z][\w-]{0,60})[ \t]*:[ \t]*(.*)$")
_UTF8_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response|answer)|autoreply|autorespons|auto:|out of (the )?office|"
    r"away( from| until)|on vacation|vacation|abwesenheit|réponse automatique|"
    r"رد تلقائي|الرد التلقائي|رد آلي|خارج المكتب)",
    re.IGNORECASE,
)
Pairs = list[tuple[str, str]]


def _field_blocks(text: str) -> list[Pairs]:
    """``Name: value`` blocks separated by blank lines (continuation lines folded in)."""
    blocks: list[Pairs] = []
    current: Pairs = []
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
        elif line[0] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
        elif match := _FIELD.match(line):
            current.append((match.group(1).lower(), match.group(2).strip()))
    if current:
        blocks.append(current)
    return blocks


def _part_blocks(part: Message) -> list[Pairs]:
    """The field blocks of a report part, however the email package stored it.

    message/delivery-status comes back as a list of header blocks; other message/* types
    (feedback-report, RFC 6533 global-delivery-status) as one message whose headers are the
    first block and whose body holds the rest.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _field_blocks(part_text(part))
    blocks: list[Pairs] = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        blocks.append([(k.lower(), _value(v)) for k, v in block.items()])
        body = block.get_payload(decode=True)  # bytes: RFC 6533 fields may be raw UTF-8
        if isinstance(body, bytes) and body.strip():
            blocks.extend(_field_blocks(decode_bytes(body, "utf-8")))
    return blocks


def _value(value: object) -> str:
    """A field value as text, also when it holds raw UTF-8 (RFC 6533)."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        return one_line(decode_bytes(raw, "utf-8"), 2000)
    try:
        chunks = decode_header(value)  # type: ignore[arg-type]  # an email.header.Header
    except Exception:
        return one_line(str(value), 2000)
    return one_line(
        " ".join(c if isinstance(c, str) else decode_bytes(c, cs) for c, cs in chunks), 2000
    )


def _first(pairs: Pairs) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in pairs:
        found.setdefault(name, value)
    return found


def _fields(text: str) -> list[dict[str, str]]:
    return [_first(block) for block in _field_blocks(text)]


def _address_field(value: str) -> str | None:
    """The address of ``rfc822; a@b`` (or RFC 6533 ``utf-8; …``) field values."""
    _, _, raw = value.rpartition(";")
    raw = _UTF8_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    found = ADDRESS.search(raw)
    return valid_address(found.group(0)) if found else None


def _status_blocks(msg: Message, data: bytes) -> list[dict[str, str]]:
    """Per-recipient DSN field blocks, from the status parts or, failing that, from raw text."""
    blocks = [
        _first(block)
        for part in walk(msg)
        if part.get_content_type() in _STATUS_TYPES
        for block in _part_blocks(part)
    ]
    recipients = [b for b in blocks if "final-recipient" in b or "original-recipient" in b]
    if recipients:
        return recipients
    # Broken MIME, or a report typed as text: DSN fields in the decoded text, else the raw bytes
    # (quoted-printable can split a field name, hence decoded first).
    decoded = "\n".join(part_text(p) for p in walk(msg) if p.get_content_maintype() == "text")
    for text in (decoded[:200_000], decode_bytes(data[:200_000], "utf-8")):
        if _DSN_FIELD.search(text):
            return [b for b in _fields(text) if "final-recipient" in b]
    return []


def delivery_status(msg: Message, data: bytes) -> list[Finding] | None:
    """RFC 3464: one finding per failed or delayed recipient, or one "not-bounce" if none."""
    blocks = _status_blocks(msg, data)
    if not blocks:
        return None
    text = notification_text(msg)
    findings: list[Finding] = []
    delivered: list[str | None] = []
    for block in blocks:
        recipient = _address_field(block.get("original-recipient", "")) or _address_field(
            block.get("final-recipient", "")
        )
        diagnostic = block.get("diagnostic-code", "").partition(";")[2].strip() or block.get(
            "diagnostic-code", ""
        )
        status = refine(status_in(block.get("status", "")), diagnostic)
        action = block.get("action", "").split()[0].lower() if block.get("action") else ""
        if action in ("delivered", "relayed", "expanded") or (status or "").startswith("2"):
            delivered.append(recipient)
            continue
        context = diagnostic or (window_about(text, recipient, []) if recipient else "") or text
        kind = "soft" if action == "delayed" else classify(status, context, default="hard")
        reason = diagnostic or block.get("status", "") or one_line(context)
        findings.append(Finding(recipient, kind, status, one_line(reason)))
    if findings:
        return findings
    return [Finding(delivered[0], "not-bounce", None, "delivery notification: delivered")]


def attached(msg: Message) -> Message | None:
    """The returned original message (its headers at least), if the report attaches it."""
    for part in walk(msg):
        if part.get_content_type() in _ORIGINAL_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):
                return email.message_from_string(payload, policy=email.policy.compat32)
    return None


def feedback_report(msg: Message) -> list[Finding] | None:
    """RFC 5965 ARF (and Hotmail JMRP): the reader who marked our message as spam."""
    pairs: Pairs = [
        pair
        for part in walk(msg)
        if part.get_content_type() == "message/feedback-report"
        for block in _part_blocks(part)
        for pair in block
    ]
    original = attached(msg)
    jmrp = original is not None and header(original, "X-HmXmrOriginalRecipient")
    is_arf = bool(pairs) or msg.get_param("report-type", header="content-type") == (
        "feedback-report"
    )
    if not is_arf and not jmrp:
        return None
    report = _first(pairs)
    feedback = (report.get("feedback-type") or "abuse").split()[0].lower()
    found = [
        a for name, value in pairs if name == "original-rcpt-to" and (a := valid_address(value))
    ]
    if not found and report.get("removal-recipient"):
        found = [a for a in [valid_address(report["removal-recipient"])] if a]
    if not found and original is not None:
        for name in ("X-HmXmrOriginalRecipient", "To"):
            match = ADDRESS.search(header(original, name))
            if match and (address := valid_address(match.group(0))):
                found = [address]
                break
    if feedback in ("auth-failure", "not-spam"):
        reason = f"feedback report: {feedback} (not a complaint)"
        return [Finding(found[0] if found else None, "not-bounce", None, reason)]
    agent = report.get("user-agent", "")
    reason = f"feedback report: {feedback}" + (f" from {agent}" if agent else "")
    return [Finding(r, "complaint", None, reason) for r in dict.fromkeys(found) or [None]]


def ses_notification(msg: Message) -> list[Finding] | None:
    """Amazon SES bounce and complaint notifications that SNS mails as JSON."""
    text = "\n".join(part_text(p) for p in walk(msg) if p.get_content_type() == "text/plain")
    start = text.find('{"notificationType"')
    if start < 0:
        return None
    # SNS wraps long lines with "!" and a newline and a space; undo that before decoding.
    body = re.sub(r"!\r?\n ", "", text[start:])
    try:
        event, _ = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind = str(event.get("notificationType", "")).lower()
    found = event.get(kind)
    detail: dict[str, Any] = found if isinstance(found, dict) else {}
    if kind == "complaint":
        people = detail.get("complainedRecipients") or [{}]
        feedback = detail.get("complaintFeedbackType", "abuse")
        return [
            Finding(
                valid_address(str(p.get("emailAddress", ""))),
                "complaint",
                None,
                f"feedback report: {feedback} (Amazon SES)",
            )
            for p in people
            if isinstance(p, dict)
        ] or None
    if kind != "bounce":
        return [Finding(None, "not-bounce", None, f"Amazon SES notification: {kind}")]
    severity: Severity = "hard" if detail.get("bounceType") == "Permanent" else "soft"
    findings = []
    for person in detail.get("bouncedRecipients") or []:
        if not isinstance(person, dict):
            continue
        diagnostic = str(person.get("diagnosticCode", ""))
        status = refine(status_in(str(person.get("status", ""))), diagnostic)
        reason = one_line(diagnostic or f"{detail.get('bounceType')} {detail.get('bounceSubType')}")
        kind_ = classify(status, diagnostic, default=severity) if status else severity
        findings.append(
            Finding(valid_address(str(person.get("emailAddress", ""))), kind_, status, reason)
        )
    return findings or None


def auto_reply_reason(msg: Message) -> str | None:
    """Why ``msg`` is an RFC 3834 auto-reply (vacation, out of office), or None."""
    if header(msg, "Auto-Submitted").lower().startswith("auto-replied"):
        return "auto-reply: Auto-Submitted: auto-replied"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autogenerated", "X-Apple-Action"):
        if header(msg, name):
            return f"auto-reply: {name}"
    if header(msg, "Precedence").lower() == "auto_reply":
        return "auto-reply: Precedence: auto_reply"
    subject = header(msg, "Subject")
    if _AUTO_SUBJECT.search(subject):
        return f"auto-reply: {subject}"
    return None


def sender_address(msg: Message) -> str | None:
    match = ADDRESS.search(header(msg, "From"))
    return valid_address(match.group(0)) if match else None
