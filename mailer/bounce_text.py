"""Text helpers for the bounce parser: decoding MIME safely, finding codes, classifying.

Nothing here raises on bad input: bounces are written by thousands of different programs, many
of them broken, and one undecodable part must not cost us the rest of the report.

Classification (:func:`classify`) follows Mailman — a permanent (5.x.x) failure is a hard
bounce — except where the code or the text says the *mailbox exists* but refused this message
for now or for what it is, not for who it is addressed to:

* mailbox full or message too big: 5.2.2, 5.2.3, 5.3.4, or "quota"/"full" in the text;
* our sender address or domain refused: 5.1.7, 5.1.8, or "sender rejected" in the text;
* content and policy: 5.6.x, 5.7.x (spam filters, blocklists, DMARC, rate limits);
* the receiving system's trouble: 5.3.x, expiry, timeouts, loops.

Those are *soft*: they add to the reader's bounce score, so a mailbox that stays full or keeps
blocking us for the score's whole window is still suppressed, but one bad day (or one blocklist
listing of our IP, which would hit every reader at that provider at once) suppresses nobody.
Whatever the code, text saying the address does not exist makes it hard (some servers answer
5.7.1 for unknown users); 5.1.x (but 5.1.7/5.1.8), 5.2.1 and 5.4.4 are hard whatever the text.
4.x.x and "delayed" are always soft. Without any code, the text decides, then the caller's
default (a failure notice is hard, a delay warning soft).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from email.header import decode_header
from email.message import Message
from typing import Literal

Severity = Literal["hard", "soft"]

TEXT_LIMIT = 40_000  # characters of notification text looked at: bounded regex work
MAX_PARTS = 64

ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?!\w|\.\d)")
REPLY_CODE = re.compile(r"(?:^|(?<=[\s'\"(\[:;#]))([45][0-5]\d)(?=[ -]|$)", re.MULTILINE)
REPLIED = re.compile(r"(?<!\d)[245]\d\d[ -]['\"]?#?([245]\.\d{1,3}\.\d{1,3})(?!\w|\.\d)")
ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_BARE_ADDRESS = re.compile(rf"^{ADDRESS.pattern}$")

# The address does not exist (English, then Arabic).
NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address|account)|"
    r"(recipient|address|addressee|user|account|mailbox)( name)? (is )?(unknown|not found|"
    r"does ?n[o']t exist|not exist|invalid|disabled|not recogni[sz]ed|unavailable|inactive)|"
    r"(unknown|invalid|bad) (recipient|address|mailbox|destination)|"
    r"(does ?n[o']t|not) (exist|have an? [\w.]+ account)|no mailbox|mailbox unavailable|"
    r"recipientnotfound|not our customer|no longer (in use|active|valid|available)|"
    r"host (or domain name )?not found|domain (not found|does not exist)|unrouteable address|"
    r"does not accept mail|disabled (recipient|account|mailbox|address)|"
    r"غير موجود|غير معروف|لا يوجد|غير صالح|معطل|غير صحيح",
    re.IGNORECASE,
)
MAILBOX_FULL = re.compile(
    r"mailbox (is )?full|over ?quota|quota|storage|insufficient|exceed|too large|too big|"
    r"ممتلئ|امتلاء|تجاوز|السعة",
    re.IGNORECASE,
)
POLICY = re.compile(
    r"spam|block|black ?list|reputation|policy|dmarc|dkim|spf|virus|content|rate limit|"
    r"too many|greylist|try again|temporar|suspicious|denied|رسائل غير مرغوب|محظور|حظر|سياسة",
    re.IGNORECASE,
)
# Our own sender address or domain was refused: nothing to hold against the reader.
SENDER_REFUSED = re.compile(
    r"sender (address |domain )?(rejected|refused|denied|blocked|verify failed|not allowed)|"
    r"(unroutable|invalid|unverified|bad) sender|not allowed to send|"
    r"unauthenticated sender",
    re.IGNORECASE,
)
# The attempt failed on the way (timeouts, loops, expiry), not at the reader's mailbox.
TRANSIENT = re.compile(
    r"expired|timed out|timeout|connection refused|refused to talk|hop count|loop|"
    r"not accepting|try (again )?later|system (error|problem)|internal (server |system )?error",
    re.IGNORECASE,
)
DELAYED = re.compile(
    r"delayed|will (be )?retr|still (be )?trying|not yet been delivered|warning:|temporar|"
    r"try again later|مؤقت|سيتم إعادة المحاولة|تأخر",
    re.IGNORECASE,
)
PERMANENT = re.compile(
    r"permanent|fatal|could not be delivered|failed|undeliverable|rejected|"
    r"تعذر|فشل|لم يتم تسليم",
    re.IGNORECASE,
)
# Where a bounce's own text stops and the returned original message starts.
ORIGINAL_MARKER = re.compile(
    r"^[\s\-=_*#]*(below this line is a copy of the message|this is a copy of the message|"
    r"original message (headers|follows)|-+ ?original message ?-+|original message:|"
    r"the header of the original message|unsent message below|returned message follows|"
    r"-+ ?returned message ?-+|below is a copy|message headers follow|"
    r"content-type: message/rfc822|content-type: text/rfc822-headers|"
    r"bounced e-?mail:|included below is a copy|your message reads|الرسالة الأصلية)",
    re.IGNORECASE | re.MULTILINE,
)
# Lines that quote headers of some message: their addresses are not the failed recipients.
HEADER_LINE = re.compile(
    r"^\s*(to|from|cc|reply-to|return-path|sender|subject|date|message-id|in-reply-to|"
    r"references|received|delivered-to|x-[\w-]+|dkim-signature|envelope-to)\s*:",
    re.IGNORECASE,
)


def one_line(text: str, limit: int = 500) -> str:
    """Whitespace collapsed to single spaces, trimmed to ``limit`` characters."""
    return " ".join(text.split())[:limit]


def header(msg: Message, name: str) -> str:
    """A header's value as text: RFC 2047 words decoded, raw UTF-8 accepted, never raises."""
    try:
        value = msg.get(name)
        if value is None:
            return ""
        out = []
        for chunk, charset in decode_header(value):
            if isinstance(chunk, bytes):
                out.append(decode_bytes(chunk, charset))
            else:
                out.append(chunk)
        return one_line(" ".join(out), 2000)
    except Exception:  # a header that cannot be decoded at all is as good as absent
        return ""


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text by ``charset``, else UTF-8, else Latin-1 (which never fails)."""
    for candidate in (charset, "utf-8"):
        if not candidate or candidate == "unknown-8bit":
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeError):
            continue
    return data.decode("latin-1")


def part_text(part: Message) -> str:
    """A leaf part's decoded text (transfer encoding and charset undone)."""
    try:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = decode_bytes(payload, part.get_content_charset())
        else:
            raw = part.get_payload()
            text = raw if isinstance(raw, str) else ""
        if part.get_content_type() == "text/html":
            text = html.unescape(re.sub(r"<[^>]{0,2000}>", " ", text))
        return text
    except Exception:
        return ""


def walk(msg: Message, *, into_attached: bool = False) -> Iterator[Message]:
    """Every part, depth first; attached messages (the returned original) only if asked.

    At most :data:`MAX_PARTS`: real reports have a handful, and hostile nesting must not make
    each detector's walk slow.
    """
    stack = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.get_content_maintype() == "message" and not into_attached and part is not msg:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))


def notification_text(msg: Message, *, cut: bool = True) -> str:
    """The human-readable text of a bounce, without the returned original message.

    The text/plain parts outside attached messages (or the HTML ones when there is no plain
    text), cut where a single-part bounce starts quoting the original.
    """
    plain: list[str] = []
    rich: list[str] = []
    for part in walk(msg):
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        # get_content_subtype, not get_content_type: broken headers ("text/plain\n charset=")
        # still say which kind of text it is.
        subtype = part.get_content_subtype()
        if subtype.startswith("html"):
            rich.append(part_text(part))
        elif not subtype.startswith(("rfc822-headers", "delivery-status")):
            plain.append(part_text(part))
    text = "\n".join(plain or rich)[:TEXT_LIMIT]
    marker = ORIGINAL_MARKER.search(text) if cut else None
    return text[: marker.start()] if marker else text


def valid_address(candidate: str) -> str | None:
    """``candidate`` as a bare address with a lower-cased domain, or None if it is not one."""
    value = candidate.strip().strip("<>()[]'\",;:").rstrip(".")
    if value.lower().startswith("mailto:"):
        value = value[7:]
    if not _BARE_ADDRESS.match(value) or ".." in value:
        return None
    local, _, domain = value.rpartition("@")
    if not any(c.isalpha() for c in domain.rsplit(".", 1)[-1]):
        return None  # an IP-ish or numeric "domain": a Message-ID or log noise, not an address
    return f"{local}@{domain.lower()}"


def enhanced_in(text: str) -> str | None:
    """The RFC 3463 enhanced status code of ``text``.

    The one right after an SMTP reply code ("550 5.7.1", "550-'5.7.1") is the remote server's
    own word; failing that the first specific one (a relay's 5.0.0 says less than 5.1.1).
    """
    replied = REPLIED.search(text)
    if replied:
        return replied.group(1)
    codes = [".".join(m.groups()) for m in ENHANCED.finditer(text)]
    specific = [c for c in codes if not c.endswith(".0.0")]
    return (specific or codes)[0] if codes else None


def status_in(text: str) -> str | None:
    """An enhanced status from ``text``: the code itself, else "5.0.0"/"4.0.0" from a reply."""
    found = enhanced_in(text)
    if found:
        return found
    reply = REPLY_CODE.search(text)
    return f"{reply.group(1)[0]}.0.0" if reply else None


def refine(status: str | None, diagnostic: str) -> str | None:
    """A DSN's status, unless its diagnostic (the remote server's reply) says more.

    Relays summarise: Amazon SES writes "5.1.0" over a remote "550 5.2.2 Mailbox full",
    sendmail "5.1.1" over "550 5.7.1 IP address blacklisted". The class (failed or delayed)
    stays the DSN's.
    """
    better = enhanced_in(diagnostic)
    if status is None:
        return better or status_in(diagnostic)
    if better and better[0] == status[0] and not better.endswith(".0.0"):
        return better
    return status


def any_cue(text: str) -> bool:
    """Whether ``text`` says anything that :func:`classify` listens to."""
    return any(
        p.search(text)
        for p in (NO_SUCH_USER, MAILBOX_FULL, POLICY, SENDER_REFUSED, DELAYED, TRANSIENT)
    )


def classify(status: str | None, text: str, *, default: Severity = "hard") -> Severity:
    """Hard or soft for one failed recipient (see the module docstring for the rule)."""
    if status is None:
        if DELAYED.search(text) or SENDER_REFUSED.search(text):
            return "soft"
        if NO_SUCH_USER.search(text):
            return "hard"
        if any(p.search(text) for p in (MAILBOX_FULL, POLICY, TRANSIENT)):
            return "soft"
        return default
    if not status.startswith("5"):
        return "soft"
    subject = status.split(".")[1]
    if status in ("5.1.7", "5.1.8", "5.2.2", "5.2.3", "5.3.4") or subject == "6":
        return "soft"
    if SENDER_REFUSED.search(text):
        return "soft"
    if subject == "1" or status in ("5.2.1", "5.4.4"):
        return "hard"  # the address itself: unknown user, disabled mailbox, no such domain
    if NO_SUCH_USER.search(text):
        return "hard"
    # 5.3.x is the receiving system's trouble and 5.7.x policy: the reader's address is fine.
    if subject in ("3", "7") or any(p.search(text) for p in (MAILBOX_FULL, POLICY, TRANSIENT)):
        return "soft"
    return "hard"


def window_about(text: str, address: str, others: list[str]) -> str:
    """The lines of ``text`` about ``address``: the line naming it and those after it.

    Of every place the address is named (header-like lines aside), the first whose lines carry
    a status code; each window stops where another failed recipient is named.
    """
    lines = text.splitlines()
    needle = address.lower()
    stops = [o.lower() for o in others if o.lower() != needle]
    windows = []
    for index, line in enumerate(lines):
        if needle not in line.lower() or HEADER_LINE.match(line):
            continue
        end = index + 1
        while end < min(len(lines), index + 8) and not any(o in lines[end].lower() for o in stops):
            end += 1
        windows.append("\n".join(lines[index:end]))
    replied = [w for w in windows if REPLIED.search(w)]
    coded = [w for w in windows if status_in(w)]
    return (replied or coded or windows or [""])[0]
