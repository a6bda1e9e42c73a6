"""Build an edition's MIME message once; personalise it per reader with a byte join.

:meth:`MessageTemplate.build` lays out the headers and both parts with :mod:`email`
(``policy.SMTP``) around the markers of :mod:`mailer.placeholders`, serialises once and splits the
bytes on the markers. :meth:`MessageTemplate.personalise` encodes a reader's values for the spot
each lands in (raw header, text body, HTML-escaped body; 8bit or quoted-printable) and joins.

The body encoding is chosen here, not by ``set_content``: under ``policy.SMTP`` it base64-encodes
Arabic (hiding the markers) and its quoted-printable soft breaks can split one (DESIGN §7).

* 8bit: UTF-8, long lines wrapped only where a newline is invisible, so that each line plus the
  largest values its markers may take stays under 998 bytes. A part that cannot be wrapped so
  (a kilobyte without a break point) falls back to quoted-printable.
* quoted-printable: every static segment ends at a line end (hard, or a soft ``=`` break), so a
  marker always starts a line; its value is encoded per reader and ends with its own soft break.
  No marker or value ever straddles a soft break.
"""

from __future__ import annotations

import binascii
import html
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage, Message, MIMEPart
from email.policy import SMTP
from typing import Final

from mailer import placeholders as ph


class HeaderInjectionError(ValueError):
    """A header value holds a character that could end the header or start another."""


# C0/C1 controls (CR, LF, NUL, …) and the other line ends of str.splitlines() (U+2028, U+2029;
# NEL is C1): the email package's folder has split header values on those before.
_UNSAFE_HEADER: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A control character in a reader's value (a name pasted with a newline) must not break the
# CRLF-only body, nor cost the reader the email: it becomes a space. TAB is fine.
_UNSAFE_VALUE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_UNSAFE_STATIC: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_MAX_LINE: Final = 990  # bytes before CRLF; RFC 5322 allows 998, the margin is for mistakes
_QP_LINE: Final = 76
#: Per value: (most characters, most bytes once encoded where it is not wrapped: a header line
#: or an 8bit body line). 300 Arabic letters are 600 UTF-8 bytes; escaping turns & into &amp;.
# fmt: off
_LIMITS: Final[Mapping[str, tuple[int, int]]] = {
    ph.GREETING: (300, 700), ph.EMAIL: (320, 400), ph.UNSUBSCRIBE_URL: (500, 600),
    ph.PREFERENCES_URL: (500, 600), ph.UNSUBSCRIBE_MAILTO: (500, 600),
    ph.TO: (900, 900), ph.MESSAGE_ID: (250, 250), ph.DATE: (80, 80),
}
# fmt: on
_RESERVED: Final = frozenset(
    {"from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id", "list-id"}
    | {"list-unsubscribe", "list-unsubscribe-post", "auto-submitted", "precedence"}
    | {"feedback-id", "mime-version", "content-type", "content-transfer-encoding"}
)
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_LIST_ID: Final = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)+", re.ASCII)
_MARKER: Final = re.compile(ph.PATTERN.pattern.encode())
# HTML break points: inside a tag outside quoted values, a newline is whitespace the HTML spec
# allows (`<td\n>`, `</p\n>`), so it never renders; in text, a newline in place of a space is
# the same collapsible whitespace. Between tags (`</b><i>`) it would add a visible space.
_TAG: Final = re.compile(
    r"<!--\[if[^\]]*\]>|<!\[endif\]-->|<!--"  # Outlook conditional fences stay whole
    r"|<![^>]*>"  # doctype
    r"|<(/?)([A-Za-z][A-Za-z0-9]*)((?:\"[^\"]*\"|'[^']*'|[^'\">])*)>"
)
_PIECES: Final = re.compile(r"""[ \t\n]+|"[^"]*"?|'[^']*'?|[^ \t\n"']+""")  # tags and CSS
_WORDS: Final = re.compile(r"[ \t\n]+|[^ \t\n]+")
_TEXT_WORDS: Final = re.compile(r" |\n|[^ \n]+")  # plain text: one space becomes one newline
_Items = list[tuple[str, bool]]  # (text, may become a newline)
Encoder = Callable[[str], bytes]

# Headers holding a marker are unstructured: parsed as a date, '__MLR_date__' would be dropped.
_REGISTRY: Final = HeaderRegistry()
for _name in ("to", "date", "message-id", "list-unsubscribe"):
    # typeshed wants a BaseHeader subclass; the registry mixes the base class in itself.
    _REGISTRY.map_to_type(_name, UnstructuredHeader)  # type: ignore[arg-type]
_POLICY: Final = SMTP.clone(header_factory=_REGISTRY)


def validate_header_value(value: str) -> str:
    """Return ``value`` unchanged, or raise :class:`HeaderInjectionError` for control characters."""
    if _UNSAFE_HEADER.search(value):
        raise HeaderInjectionError(f"control character in header value {value!r}")
    return value


@dataclass(frozen=True)
class MessageSpec:
    """What one edition's message says. ``html`` and ``text`` hold body markers; headers none.

    ``list_id`` is ``'id.example.com'`` or ``'Name <id.example.com>'``; ``kind`` ``'alert'`` adds
    ``Auto-Submitted: auto-generated``, ``'digest'`` adds ``Precedence: bulk``, others neither.
    """

    subject: str
    html: str
    text: str
    sender: str
    reply_to: str | None
    list_id: str
    kind: str
    feedback_id: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)


_SUBJECT_SLOT: Final = "MLRSUBJECTSLOT"


def _refold_subject(data: bytes, subject: str) -> bytes:
    """Put the real Subject where the slot is, RFC 2047-encoded by ``email.header.Header``.

    Two reasons not to let ``policy.SMTP`` write it: it decodes encoded words found in the
    value (a title "=?utf-8?q?=0D=0ABcc:…?=" became a real Bcc header), and it sometimes folds
    between two encoded words exactly at a space, which readers drop ("التي كانت" shown as
    "التيكانت"). ``Header`` keeps every space inside an encoded word and encodes any value
    holding "=?" instead of passing it through.
    """
    plain = subject.isascii() and "=?" not in subject
    encoded = Header(subject, "us-ascii" if plain else "utf-8", header_name="Subject")
    slot = f"Subject: {_SUBJECT_SLOT}\r\n".encode()
    if data.count(slot) != 1:
        raise AssertionError("the Subject slot must appear exactly once")
    line = b"Subject: " + encoded.encode(linesep="\r\n").encode("ascii") + b"\r\n"
    return data.replace(slot, line, 1)


class MessageTemplate:
    """An edition's message as static byte segments and the encoders of the values between."""

    def __init__(
        self, parts: list[bytes], slots: list[tuple[int, int]], encoders: list[tuple[str, Encoder]]
    ) -> None:
        self._parts = parts  # static segments, with b"" where a value goes
        self._slots = slots  # (position in parts, index of the encoded value)
        self._encoders = encoders  # (name, encoder): each distinct name × context once

    @classmethod
    def build(cls, spec: MessageSpec, *, eightbit: bool = True) -> MessageTemplate:
        """Validate ``spec``'s headers (:class:`HeaderInjectionError`) and lay the message out.

        ``eightbit`` says the server offers 8BITMIME; without it both parts are quoted-printable.
        """
        msg = EmailMessage(policy=_POLICY)
        msg["From"] = _address(spec.sender)
        if spec.reply_to is not None:
            msg["Reply-To"] = _address(spec.reply_to)
        msg["To"] = ph.marker(ph.TO)
        _checked(spec.subject)
        # The email package would decode any "=?…?=" in the value (CVE-2024-6923), turning an
        # encoded CRLF into real headers: it only ever sees an inert slot, replaced below.
        msg["Subject"] = _SUBJECT_SLOT
        msg["Date"] = ph.marker(ph.DATE)
        msg["Message-ID"] = ph.marker(ph.MESSAGE_ID)
        msg["List-Id"] = _list_id(spec.list_id)
        mailto = ph.marker(ph.UNSUBSCRIBE_MAILTO)
        msg["List-Unsubscribe"] = f"<{ph.marker(ph.UNSUBSCRIBE_URL)}>, <{mailto}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if spec.kind == "alert":
            msg["Auto-Submitted"] = "auto-generated"
        elif spec.kind == "digest":
            msg["Precedence"] = "bulk"
        if spec.feedback_id is not None:
            msg["Feedback-ID"] = _checked(spec.feedback_id)
        for name, value in spec.extra_headers.items():
            if not _FIELD_NAME.fullmatch(name):
                raise HeaderInjectionError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name!r} is set by the builder or not allowed")
            msg[name] = _checked(value)
        msg["MIME-Version"] = "1.0"
        # '=_' never occurs in quoted-printable, and the random part is unguessable.
        boundary = "=_mlr_" + secrets.token_hex(16)
        msg.add_header("Content-Type", "multipart/alternative", boundary=boundary)
        text_part, text_qp = _part(spec.text, "plain", eightbit)
        html_part, html_qp = _part(spec.html, "html", eightbit)
        payload: list[Message | str] = [text_part, html_part]
        msg.set_payload(payload)
        data = _refold_subject(msg.as_bytes(), spec.subject)
        # Two 600-byte URLs do not fit one line: fold List-Unsubscribe between them.
        old, new = f">, <{mailto}".encode(), f">,\r\n <{mailto}".encode()
        data = data.replace(old, new, 1)
        head_end = data.index(b"\r\n\r\n")
        html_start = data.index(b"\r\n--" + boundary.encode() + b"\r\n", head_end + 4)
        for line in data[:head_end].split(b"\r\n"):
            if _weight(line.decode("ascii", "replace")) > _MAX_LINE:
                raise ValueError(f"header line too long to send: {line[:60]!r}…")
        parts: list[bytes] = []
        slots: list[tuple[int, int]] = []
        encoders: list[tuple[str, Encoder]] = []
        seen: dict[tuple[str, str], int] = {}
        pos = 0
        for m in _MARKER.finditer(data):  # names were checked: headers by us, bodies in _part
            name, at = m.group(1).decode(), m.start()
            context = "header" if at < head_end else "text" if at < html_start else "html"
            if (name, context) not in seen:
                seen[name, context] = len(encoders)
                qp = {"header": False, "text": text_qp, "html": html_qp}[context]
                encoders.append((name, _encoder(name, context, qp)))
            parts.append(data[pos : m.start()])
            slots.append((len(parts), seen[name, context]))
            parts.append(b"")
            pos = m.end()
        parts.append(data[pos:])
        return cls(parts, slots, encoders)

    def personalise(self, values: Mapping[str, str]) -> bytes:
        """One reader's message: ``values`` maps every placeholder name to its raw value.

        Raises :class:`HeaderInjectionError` for a control character in a header value and
        :class:`ValueError` for a value over its limit (greeting 300 characters, email 320,
        URLs 500; To 900 bytes).
        """
        return self.join(self.encode(values))

    def encode(self, values: Mapping[str, str]) -> list[bytes]:
        """Each value encoded for its spot, in the order :meth:`join` and :meth:`body` use
        (errors as for :meth:`personalise`)."""
        return [encode(values[name]) for name, encode in self._encoders]

    def join(self, encoded: list[bytes]) -> bytes:
        """The message with :meth:`encode`'s values in their places."""
        parts = self._parts.copy()
        for position, index in self._slots:
            parts[position] = encoded[index]
        return b"".join(parts)

    def body(self) -> tuple[list[bytes], list[int]]:
        """The body (after the blank line that ends the headers) as its static segments and,
        for each gap between two of them, the index of the value there in :meth:`encode`'s
        list. Header values hold no CR or LF, so the blank line is in a static segment."""
        # build() always lays out headers, a blank line and a body; a value's slot holds b"".
        position = next(i for i, part in enumerate(self._parts) if b"\r\n\r\n" in part)
        part = self._parts[position]
        segments = [part[part.index(b"\r\n\r\n") + 4 :]]
        indices = []
        for slot, index in self._slots:
            if slot > position:
                indices.append(index)
                segments.append(self._parts[slot + 1])
        return segments, indices

    @property
    def size(self) -> int:
        """Bytes of the static part of the message (a reader's copy adds their values)."""
        return sum(map(len, self._parts))


def _checked(value: str) -> str:
    validate_header_value(value)
    if ph.PREFIX in value:
        raise ValueError(f"placeholders are not allowed in this header: {value!r}")
    return value


def _address(value: str) -> str:
    header = _POLICY.header_factory("from", _checked(value))
    addresses = header.addresses
    if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise ValueError(f"not a single address: {value!r}")
    return value


def _list_id(value: str) -> str:
    """RFC 2919: 'id.example.com' or 'Name <id.example.com>' becomes the header value."""
    name, ident = "", _checked(value)
    if value.endswith(">") and "<" in value:
        name, _, ident = value[:-1].rpartition("<")
    if not _LIST_ID.fullmatch(ident):
        raise ValueError(f"not a list id: {value!r}")
    return f"{name.strip()} <{ident}>".lstrip()


# One address (already validated by mailer.addresses) or one msg-id: a cheap last check, so
# no caller can make a header that mail parsers choke on or read as something else.
_SPECIALS = r"\s@<>()\[\];:,\"\\"
_ADDR = rf"[^{_SPECIALS}]+@[^{_SPECIALS}]+"
# A display name as email.utils.formataddr writes it: a quoted string, or words (atoms and
# encoded words) without specials.
_DISPLAY = rf'(?:"(?:[^"\\]|\\.)*"|[^{_SPECIALS}]+(?:[ \t]+[^{_SPECIALS}]+)*)'
_SHAPES: Final = {
    ph.TO: re.compile(rf"{_ADDR}|\s*(?:{_DISPLAY}\s*)?<{_ADDR}>"),
    ph.MESSAGE_ID: re.compile(rf"<{_ADDR}>"),
}


def _encoder(name: str, context: str, qp: bool) -> Encoder:
    """The function that turns a raw value into its bytes for one spot (closed over, no lookups)."""
    max_chars, max_bytes = _LIMITS[name]
    header, escape = context == "header", context == "html"
    shape = _SHAPES.get(name) if header else None

    def encode(value: str) -> bytes:
        if len(value) > max_chars:
            raise ValueError(f"{name} longer than {max_chars} characters")
        if header:
            validate_header_value(value)
            if not value.strip():  # "To: " alone is no recipient (and breaks parsers)
                raise ValueError(f"{name} is empty")

        elif _UNSAFE_VALUE.search(value):
            value = _UNSAFE_VALUE.sub(" ", value)
        data = (html.escape(value) if escape else value).encode()
        if qp:
            return _qp(data, soft=True).replace(b"\n", b"\r\n")
        if len(data) > max_bytes:
            raise ValueError(f"{name} longer than {max_bytes} bytes once encoded")
        if shape is not None and not shape.fullmatch(value):
            raise ValueError(f"{name} is not a valid {name.replace('_', ' ')}: {value[:80]!r}")
        return data

    return encode


def _qp(data: bytes, *, soft: bool) -> bytes:
    """Quoted-printable with LF line ends; ``soft`` ends a partial last line with '=' + LF."""
    out = binascii.b2a_qp(data, istext=True)
    if soft and not out.endswith(b"\n"):
        if len(out) - out.rfind(b"\n") - 1 >= _QP_LINE:
            # b2a_qp lets a last literal character reach column 76; the '=' needs one more.
            out = out[:-1] + b"=\n" + out[-1:]
        out += b"=\n"
    return out


def _part(text: str, subtype: str, eightbit: bool) -> tuple[MIMEPart, bool]:
    """A text/``subtype`` part in 8bit if it wraps to fit, else quoted-printable (True)."""
    text = _UNSAFE_STATIC.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text if text.endswith("\n") else text + "\n"
    for name in ph.PATTERN.findall(text):
        if name not in ph.BODY_NAMES:
            raise ValueError(f"unknown placeholder {name!r} in the {subtype} part")
    wrapped = None
    if eightbit:
        items = _html_items(text) if subtype == "html" else _split_into(text, _TEXT_WORDS, [])
        wrapped = _wrap(items)
    part = MIMEPart(policy=_POLICY)
    part.add_header("Content-Type", f"text/{subtype}", charset="utf-8")
    if wrapped is None:
        chunks = ph.PATTERN.split(text)  # text, name, text, …, text
        payload = "".join(
            ph.marker(chunk) if i % 2 else _qp(chunk.encode(), soft=i < len(chunks) - 1).decode()
            for i, chunk in enumerate(chunks)
        )
    else:  # surrogateescape: how the email package carries 8bit bytes in a str payload
        payload = wrapped.encode().decode("ascii", "surrogateescape")
    part["Content-Transfer-Encoding"] = "8bit" if wrapped is not None else "quoted-printable"
    part.set_payload(payload)
    return part, wrapped is None


def _split_into(text: str, pattern: re.Pattern[str] | None, items: _Items) -> _Items:
    """Append ``text`` to items: pieces by ``pattern`` (whitespace may break), or kept whole."""
    if pattern is None:  # significant whitespace: only its own newlines end lines
        items.extend((piece, False) for piece in re.split(r"(?<=\n)", text) if piece)
    else:
        items.extend((piece, piece[0] in " \t\n") for piece in pattern.findall(text))
    return items


def _html_items(src: str) -> _Items:
    """Split HTML into pieces and the places where a newline would not change what it shows."""
    items: _Items = []
    verbatim = 0  # depth of <pre>, whose text keeps its whitespace
    pos = 0
    while m := _TAG.search(src, pos):
        _split_into(src[pos : m.start()], None if verbatim else _WORDS, items)
        pos = m.end()
        closing, name, attrs = m.groups()
        if name is None:
            items.append((m.group(), False))
            continue
        slash = "/" if attrs.endswith("/") and attrs[-2:-1] in ("", " ", '"', "'") else ""
        attrs = attrs[: len(attrs) - len(slash)]
        items.append((f"<{closing}{name}", False))
        _split_into(attrs, _PIECES, items)
        if not attrs.endswith((" ", "\t", "\n")):
            items.append(("", True))  # `<td\n>`: whitespace before '>' is allowed
        items.append((slash + ">", False))
        lower = name.lower()
        if lower == "pre":
            verbatim = max(0, verbatim - 1) if closing else verbatim + 1
        elif lower in ("style", "script", "textarea") and not closing:  # no tags inside
            end = re.compile(f"</{lower}", re.IGNORECASE).search(src, pos)
            stop = end.start() if end else len(src)
            # CSS takes a newline wherever it takes a space (outside strings); the others do not.
            _split_into(src[pos:stop], _PIECES if lower == "style" else None, items)
            pos = stop
    _split_into(src[pos:], None if verbatim else _WORDS, items)
    return items


def _weight(line: str) -> int:
    """Bytes of a line once its markers hold the largest values allowed for them."""
    size = len(line.encode())
    if ph.PREFIX in line:
        for m in ph.PATTERN.finditer(line):
            size += _LIMITS.get(m.group(1), (0, 0))[1] - len(m.group())
    return size


def _wrap(items: _Items) -> str | None:
    """Greedy fill: break at the last break point that keeps each line under the limit."""
    out: list[str] = []
    width = 0  # weight of the line so far
    brk, after = -1, 0  # index in out of the line's last break point; weight since then
    for text, breakable in items:
        if breakable and "\n" not in text:
            out.append(text)
            brk, after, width = len(out) - 1, 0, width + len(text)
            continue
        head, newline, _ = text.partition("\n")
        weight = _weight(head)
        if width + weight > _MAX_LINE and brk >= 0:
            out[brk], width, brk = "\n", after, -1
        out.append(text)
        if newline:  # the piece ends the line (the lines inside it are checked below)
            width, brk = _weight(text.rpartition("\n")[2]), -1
        else:
            width, after = width + weight, after + weight
    result = "".join(out)
    return result if all(_weight(line) <= _MAX_LINE for line in result.split("\n")) else None
