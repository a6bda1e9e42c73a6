"""What the hostile-input tests and ``benchmarks.reliability_hostile`` share.

* :class:`Newsroom`: a migrated database where readers arrive through the CSV importer
  (:func:`mailer.subscribers.read_csv` → :func:`~mailer.subscribers.import_readers`), stories
  through :func:`mailer.stories.upsert_story`, and alerts leave through the real
  :class:`~mailer.service.Service` (rendering with :class:`~mailer.rendering.Renderer`) and
  :class:`~mailer.sending.EditionSender` over an in-memory transport — the path a worker takes.
* :func:`message_problems`: a sent message parsed back and held against a benign baseline.
* :func:`executable`: what in an HTML document could run script.
* The hostile fragments and the OWASP payload list.
"""

from __future__ import annotations

import csv
import email
import email.policy
import html
import io
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from itertools import count
from pathlib import Path

import lxml.html
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.addresses import InvalidAddress, normalise
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Topic,
    utcnow,
)
from mailer.models import (
    Edition as EditionRow,
)
from mailer.rendering import Renderer
from mailer.sending import Claimed, EditionSender, PreparedEdition, greeting
from mailer.service import Service
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ImportReport, import_readers, read_csv
from mailer.transport import MemoryTransport

#: ``MAILER_TEST_FULL=1`` runs every hostile test at its full size (the repository's convention).
FULL = os.environ.get("MAILER_TEST_FULL", "") == "1"


def size(quick: int, full: int) -> int:
    return full if FULL else quick


# -- hostile text --------------------------------------------------------------------------------

#: Pieces that end a header, start another, smuggle a recipient, or flip what a reader sees.
FRAGMENTS: tuple[str, ...] = (
    "\r", "\n", "\r\n", "\x00", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e",
    "\r\nBcc: evil@example.org", "\nCc: evil@example.org", "\r\nTo: evil@example.org",
    "\r\n\r\n<script>alert(1)</script>", "\r\n Bcc: evil@example.org",
    # Encoded newlines: must stay the literal text they are, never become a line break.
    "=0D=0A", "=0d=0aBcc: evil@example.org", "%0d%0a", "%0D%0ABcc: evil@example.org",
    "\\u000d\\u000a", "\\r\\n", "&#13;&#10;", "&#x0D;&#x0A;",
    "=?utf-8?q?=0D=0ABcc:_evil@example.org?=", "=?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?=",
    # Address syntax.
    '"', "'", ",", ";", ":", "<", ">", "(", ")", "@", "\\", "evil@example.org",
    "<evil@example.org>", '"evil@example.org" <evil@example.org>', ", evil@example.org",
    # Bidi controls: RLO, LRO, PDF, isolates, marks, the Arabic letter mark.
    "\u202e", "\u202d", "\u202c", "\u202b", "\u202a", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u200f", "\u200e", "\u061c", "\u200b", "\ufeff",
    # Our own placeholder markers and template syntax: values are never scanned again.
    "__MLR_to__", "__MLR_greeting__", "{{ 7*7 }}", "{% raw %}",
    " ", "  ", "\t", "عاجل", "أمل", "الأسد", "Ünïcödé", "x" * 40,
)  # fmt: skip

#: Hostile text: fragments, with now and then anything Hypothesis likes in between.
hostile_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=10
).map("".join)

#: Characters :func:`mailer.stories.upsert_story` refuses in a title ("a story title is one line").
TITLE_REFUSED = frozenset("\r\n\x00")
#: Hostile addresses: fragments around an @, or no @ at all.
_address_local = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.from_regex(r"[a-z0-9.+_-]{1,8}", fullmatch=True)),
    min_size=1,
    max_size=4,
).map("".join)
_address_domain = st.sampled_from(
    ["example.com", "EXAMPLE.org", "مثال.مصر", "example.com.", "[192.0.2.1]"]
)
hostile_address = st.one_of(
    st.builds(
        lambda local, domain, tail: f"{local}@{domain}{tail}",
        _address_local,
        _address_domain,
        st.one_of(st.just(""), st.sampled_from(FRAGMENTS)),
    ),
    hostile_text,
)


#: Local parts that are RFC 2047 encoded words: Python's parser reads them back as another
#: address (``x@example.com``), as a quoted list, or as a header break.
ENCODED_WORD_ADDRESSES = [
    "=?utf-8?q?x?=@example.com",
    "=?utf-8?q?a=2C_b=40evil.example?=@example.com",
    "=?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?=@example.com",
]

#: The shapes of CPython gh-102988 (and its fix's tests) that tests/mailer/test_addresses.py does
#: not list yet: ``f"{alice}{separator}<{bob}>"`` for every separator, comments, quoted commas.
CVE_2023_27043 = [
    *(
        f"alice@example.org{separator}<bob@example.org>"
        for separator in ("(", "<", ">", "[", "]", "@", ";", ":", ".", '"', ",")
    ),
    "alice@example.org) (bob@example.org",
    "alice@example.org )Alice(",
    "alice@example.org (Alice)",
    "bob@example.org (alice@example.org)",
    '"Alice, alice@example.org" <bob@example.org>',
    '"Jane Doe" <jane@example.net>, "John Doe" <john@example.net>',
    "alice@example.org,bob@example.org",
    "<alice@example.org>bob@example.org",
]


# -- the newsroom --------------------------------------------------------------------------------


def settings_for(folder: Path, database_url: str = "", **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": folder,
        "database_url": database_url or f"sqlite:///{folder / 'mailer.db'}",
        "base_url": "https://news.example.com",
        "secret_keys": "hostile-secret",
        "hash_key": "hostile-hash-key",
        "dispatcher": "mailer.dispatch:NullDispatcher",
        "smtp_url": "smtp://127.0.0.1:9?timeout=1",
        "subscribe_limit_per_ip": "1000000/hour",
        "subscribe_limit_per_address": "1000000/hour",
        "alert_batch_size": 50,
        "claim_chunk": 50,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sent:
    envelope_to: str
    data: bytes


class Newsroom:
    """A migrated database and the real import, story, render and send path around it."""

    def __init__(
        self, folder: Path, database_url: str = "", *, eightbit: bool = True, **overrides: object
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.settings = settings_for(folder, database_url, **overrides)
        upgrade(self.settings.database)
        self.engine = make_engine(self.settings.database)
        with Session(self.engine) as session:
            ensure_topics(session)
            session.commit()
        self.dispatcher = MemoryDispatcher()
        self.transport = MemoryTransport(eightbitmime=eightbit)
        self.renderer = Renderer(self.settings)
        self.service = Service(self.engine, self.settings, self.dispatcher, self.renderer)
        self.sender = EditionSender(self.settings, self.engine, self.transport)
        self._files = count(1)
        self._urls = count(1)

    def close(self) -> None:
        self.engine.dispose()

    # -- readers, through the CSV importer -------------------------------------------------------

    def write_csv(self, rows: Iterable[dict[str, str]]) -> Path:
        path = self.folder / f"readers-{next(self._files)}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["email", "name", "topics", "cadence"])
            writer.writeheader()
            for row in rows:
                writer.writerow({"topics": "breaking", "cadence": "instant"} | row)
        return path

    def import_csv(self, path: Path, *, consented: bool = True) -> ImportReport:
        return import_readers(self.engine, read_csv(path), self.settings, consented=consented)

    def add_reader(self, address: str, name: str = "") -> ImportReport:
        """One reader, as a one-row CSV file imported the way ``mailer subscribers import`` does."""
        return self.import_csv(self.write_csv([{"email": address, "name": name}]))

    def readers(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Subscriber)) or 0

    def alert_readers(self) -> list[str]:
        """Every active reader of instant "breaking" alerts, sorted."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(Subscriber.email)
                .join(Subscription, Subscription.subscriber_id == Subscriber.id)
                .where(
                    Subscriber.status == SubscriberStatus.ACTIVE,
                    Subscription.cadence == Cadence.INSTANT,
                )
                .distinct()
            )
            return sorted(str(r) for r in rows)

    def topic_slugs(self) -> frozenset[str]:
        with Session(self.engine) as session:
            return frozenset(session.scalars(select(Topic.slug)))

    def reader(self, address: str) -> Subscriber | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalar(select(Subscriber).where(Subscriber.email == address))

    # -- stories and alerts ----------------------------------------------------------------------

    def publish(self, title: str, summary: str = "", body_html: str = "", **extra: object) -> int:
        """A story through :func:`upsert_story` (raises ValueError when it refuses it)."""
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(
                    title=title,
                    url=f"https://news.example.com/story/{next(self._urls)}",
                    topic="breaking",
                    summary=summary,
                    body_html=body_html,
                    is_breaking=True,
                    published_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
                    **extra,  # type: ignore[arg-type]
                ),
            )
            session.commit()
            return story.id

    def alert(self, story_id: int) -> int:
        """Create and start the story's alert (raises ValueError when rendering refuses it)."""
        return self.service.trigger_alert(story_id).edition_id

    def deliver(self) -> list[Sent]:
        """Send every batch queued so far, as workers do; what the transport received."""
        self.transport.sent.clear()
        batches, self.dispatcher.sent[:] = list(self.dispatcher.sent), []
        for _, batch in batches:
            self.sender.send_batch(batch)
        return [Sent(rcpt, data) for _, rcpt, data in self.transport.sent]

    def subject(self, edition_id: int) -> str:
        """The Subject the edition was rendered with."""
        with Session(self.engine) as session:
            return session.scalars(
                select(EditionRow.subject).where(EditionRow.id == edition_id)
            ).one()

    def prepared(self, edition_id: int) -> PreparedEdition:
        prepared = self.sender.prepare(edition_id)
        assert prepared is not None
        return prepared

    def message_for(self, prepared: PreparedEdition, reader: Subscriber) -> bytes:
        """The reader's copy exactly as :meth:`EditionSender.message_for` builds it for sending."""
        assert reader.email is not None
        claimed = Claimed(
            delivery_id=0,
            subscriber_id=reader.id,
            email=reader.email,
            name=reader.name or "",
            needs_smtputf8=bool(reader.needs_smtputf8),
            attempts=1,
            created_at=utcnow(),
        )
        return self.sender.message_for(prepared, claimed)[1]


# -- messages parsed back ------------------------------------------------------------------------

_RAW_HEADER_LINE = re.compile(rb"[!-9;-~]+:([ \t]|$)|[ \t]")


#: What ends a line for the CSV reader (a file opened with newline="").
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_breaks(*fields: str) -> int:
    """Lines a CSV record's quoted fields add (each field on its own: CR, comma, LF is two)."""
    return sum(len(LINE_BREAK.findall(f)) for f in fields)


def _utf8(value: str) -> str:
    """A header value the parser left as surrogate escapes (raw UTF-8, SMTPUTF8), decoded."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass(frozen=True)
class Shape:
    """What a benign copy of the same edition looks like: its header names and MIME parts."""

    headers: Counter[str]
    parts: tuple[str, ...]

    @classmethod
    def of(cls, data: bytes) -> Shape:
        message = parse(data)
        return cls(
            Counter(k.lower() for k in message),  # header names, repeats included
            tuple(p.get_content_type() for p in message.walk()),
        )


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


def message_problems(
    data: bytes,
    *,
    baseline: Shape,
    recipient: str,
    subject: str | None = None,
    name: str | None = None,
) -> list[str]:
    """Why ``data`` is not a message for exactly ``recipient`` shaped like ``baseline``.

    Checked on the raw bytes (CRLF only, every header line a known field or a continuation)
    and parsed back: the same header names as the benign copy, exactly one To holding exactly
    ``recipient``, no Cc/Bcc, the same MIME parts, the decoded Subject equal to ``subject``, and
    the reader's ``name`` shown in both greetings (escaped in the HTML one).
    """
    problems: list[str] = []
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return ["no blank line after the header"]
    if re.search(rb"\r(?!\n)|(?<!\r)\n|\x00", data):
        problems.append("a bare CR, bare LF or NUL in the message")
    for line in head.split(b"\r\n"):
        if not _RAW_HEADER_LINE.match(line):
            problems.append(f"not a header line: {line[:80]!r}")
        elif line[:1] not in (b" ", b"\t"):
            field = line.split(b":", 1)[0].decode("ascii").lower()
            if field not in baseline.headers:
                problems.append(f"header not in the template: {field}")
    message = parse(data)
    shape = Shape.of(data)
    if shape.headers != baseline.headers:
        problems.append(f"header names {dict(shape.headers)} != {dict(baseline.headers)}")
    if shape.parts != baseline.parts:
        problems.append(f"MIME parts {shape.parts} != {baseline.parts}")
    for name_ in ("cc", "bcc", "resent-to", "resent-cc", "resent-bcc"):
        if message.get_all(name_):
            problems.append(f"{name_} present")
    try:
        to_headers = message.get_all("To") or []
        addresses = [_utf8(a.addr_spec) for h in to_headers for a in h.addresses]
    except ValueError as exc:  # the parser decoded something it will not hold in an address
        problems.append(f"To does not parse back: {exc}")
    else:
        if len(to_headers) != 1 or addresses != [recipient]:
            problems.append(f"To holds {addresses!r}, not exactly [{recipient!r}]")
    if subject is not None and _utf8(str(message["Subject"])) != subject:
        problems.append(f"Subject {str(message['Subject'])!r} != {subject!r}")
    if name is not None:
        shown = greeting(name)
        if shown not in body(message, "plain"):
            problems.append(f"text greeting {shown!r} missing")
        if html.escape(shown) not in body(message, "html"):
            problems.append(f"escaped HTML greeting {html.escape(shown)!r} missing")
    return problems


# -- one hostile input through the real path ----------------------------------------------------


@dataclass
class Verdict:
    """What became of one hostile input: taken (and delivered safely?) or refused, and why."""

    accepted: bool
    problems: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True)
class Edition:
    """An alert prepared once, and how a benign reader's copy of it looks."""

    prepared: PreparedEdition
    baseline: Shape
    subject: str


def benign_edition(room: Newsroom) -> Edition:
    room.add_reader("benign@example.com", "أمل")
    prepared = room.prepared(room.alert(room.publish("اختبار: benign", "ملخص الخبر")))
    reader = room.reader("benign@example.com")
    assert reader is not None
    baseline = Shape.of(room.message_for(prepared, reader))
    return Edition(prepared, baseline, prepared.spec.subject)


def try_name(room: Newsroom, edition: Edition, name: str, address: str) -> Verdict:
    """A reader named ``name`` imported by CSV; their copy of ``edition`` parsed back."""
    report = room.add_reader(address, name)
    if report.errors:
        return Verdict(False, [f"a reader's name was refused: {report.errors}"])
    reader = room.reader(address)
    if reader is None:
        return Verdict(False, [f"{address} was not stored"])
    data = room.message_for(edition.prepared, reader)
    problems = message_problems(
        data,
        baseline=edition.baseline,
        recipient=address,
        subject=edition.subject,
        name=reader.name or "",
    )
    return Verdict(True, problems)


def try_address(room: Newsroom, edition: Edition, raw: str) -> Verdict:
    """``raw`` as the email column of a CSV row: refused by line, or the one recipient."""
    before = room.readers()
    report = room.add_reader(raw)
    if report.errors:
        [(line, reason)] = report.errors
        # The record starts on line 2 and ends further down if line breaks are quoted in it.
        lines = range(2, 3 + line_breaks(raw))
        problems = [] if line in lines and reason else [f"refusal {report.errors}: line? reason?"]
        if room.readers() != before:
            problems.append("a refused address was stored")
        return Verdict(False, problems, reason)
    address = normalise(raw.strip()).email
    reader = room.reader(address)
    if reader is None:
        return Verdict(True, [f"{raw!r} accepted but no reader {address!r} stored"])
    data = room.message_for(edition.prepared, reader)
    return Verdict(
        True,
        message_problems(
            data, baseline=edition.baseline, recipient=address, subject=edition.subject
        ),
    )


def try_title(room: Newsroom, baseline: Shape, title: str) -> Verdict:
    """A story titled ``title`` and its alert, sent to every alert reader and parsed back."""
    try:
        story_id = room.publish(title, "ملخص")
    except ValueError as exc:
        return Verdict(False, [] if str(exc) else ["refused without a reason"], str(exc))
    try:
        edition_id = room.alert(story_id)
    except ValueError as exc:
        return Verdict(False, [] if str(exc) else ["refused without a reason"], str(exc))
    # What the renderer made of the title is the Subject every reader must get, byte for byte.
    subject = room.subject(edition_id)
    problems = [] if title.strip() in subject else [f"title missing from Subject {subject!r}"]
    try:
        sent = room.deliver()
    except Exception as exc:  # what a worker would hit: the alert never reaches anyone
        return Verdict(True, [f"accepted, then sending raised {type(exc).__name__}: {exc}"])
    readers = room.alert_readers()
    if sorted(s.envelope_to for s in sent) != readers:
        problems.append(f"sent to {[s.envelope_to for s in sent]}, not once to each of {readers}")
    for message in sent:
        problems += message_problems(
            message.data, baseline=baseline, recipient=message.envelope_to, subject=subject
        )
    return Verdict(True, problems)


# -- the CSV importer ----------------------------------------------------------------------------

CSV_HEADER = ("email", "name", "topics", "cadence")
FILE_REFUSED = "the header must have an 'email' column"


@dataclass
class CsvVerdict:
    """One file through ``read_csv`` → ``import_readers``: its report, or why it had none."""

    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    file_refused: bool = False
    crashed: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def row_is_valid(row: Sequence[str], slugs: frozenset[str]) -> bool:
    """What the README promises of a row: an address, known topics, a known cadence."""
    email, _, topics, cadence = row
    try:
        normalise(email.strip())
    except InvalidAddress:
        return False
    chosen = [t.strip() for t in topics.split(";") if t.strip()]
    return all(t in slugs for t in chosen) and (cadence or "instant").strip() in tuple(Cadence)


def try_csv(room: Newsroom, data: bytes, rows: Sequence[Sequence[str]] | None = None) -> CsvVerdict:
    """Import ``data`` as a CSV file; with the ``rows`` it was written from, check each row's fate.

    Always: no exception but the documented one for a file without an ``email`` column; every
    row read is added, already known or reported; every report names a line of the file and a
    reason; the readers table grew by what was added. With ``rows``: exactly the invalid rows are
    reported, each on a line of its own record.
    """
    verdict = CsvVerdict()
    path = room.folder / f"fuzz-{next(room._files)}.csv"
    path.write_bytes(data)
    before = room.readers()
    started = time.perf_counter()
    try:
        report = room.import_csv(path)
    except ValueError as exc:
        verdict.seconds = time.perf_counter() - started
        if FILE_REFUSED in str(exc):
            verdict.file_refused = True
        else:
            verdict.crashed = f"{type(exc).__name__}: {exc}"
            verdict.problems.append(verdict.crashed)
        return verdict
    except Exception as exc:  # anything else escapes the CLI as a traceback
        verdict.seconds = time.perf_counter() - started
        verdict.crashed = f"{type(exc).__name__}: {exc}"
        verdict.problems.append(verdict.crashed)
        return verdict
    verdict.seconds = time.perf_counter() - started
    verdict.rows, verdict.rejected, verdict.errors = report.read, len(report.errors), report.errors
    verdict.accepted = report.added + report.existing
    problems = verdict.problems
    if report.read != report.added + report.existing + len(report.errors):
        problems.append(f"rows unaccounted for: {report}")
    last = len(LINE_BREAK.findall(data.decode("utf-8", "replace"))) + 1
    for line, reason in report.errors:
        if not 2 <= line <= last or not reason:
            problems.append(f"report ({line}, {reason!r}) outside lines 2..{last} or no reason")
    if room.readers() - before != report.added:
        problems.append(f"{room.readers() - before} readers stored, {report.added} reported added")
    if rows is not None:
        slugs = room.topic_slugs()
        spans, end = [], 1
        for row in rows:
            start, end = end + 1, end + 1 + line_breaks(*row)
            spans.append(range(start, end + 1))
        reported = sorted(
            i for line, _ in report.errors for i, span in enumerate(spans) if line in span
        )
        invalid = [i for i, row in enumerate(rows) if not row_is_valid(row, slugs)]
        if reported != invalid:
            problems.append(f"rows reported {reported}, invalid rows {invalid}: {report.errors}")
    return verdict


# -- executable HTML -----------------------------------------------------------------------------

#: Elements that run script or load active content, wherever they come from.
DANGEROUS_TAGS = frozenset(
    {"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "svg", "math"}
    | {"xml", "import", "isindex", "portal", "noembed", "noscript", "xss", "bgsound", "layer"}
)
#: Elements a template may hold (its own stylesheet, forms, meta tags) but input must not add:
#: counted, so a page is compared with the same page made from benign input.
WATCHED_TAGS = frozenset({"style", "link", "meta", "form", "input", "button", "textarea"})
WATCHED_TAGS |= {"template", "select", "video", "audio", "source", "marquee", "details"}
URL_ATTRIBUTES = frozenset(
    {"href", "src", "action", "formaction", "xlink:href", "background", "dynsrc", "lowsrc"}
    | {"poster", "data", "codebase", "srcdoc", "ping", "cite", "longdesc", "usemap", "content"}
)
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:", "mocha:", "data:")
_SAFE_DATA = re.compile(r"data:image/(png|gif|jpe?g|webp)[;,]", re.IGNORECASE)
_CSS_SCRIPT = re.compile(
    r"expression\(|javascript:|vbscript:|behaviou?r:|-moz-binding|@import", re.IGNORECASE
)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_URL_EDGES = "".join(map(chr, range(0x21)))  # C0 controls and space: stripped at both ends
_URL_INSIDE = re.compile("[\t\n\r\x00]")  # dropped anywhere (NUL: old IE did too)


def _script_url(value: str) -> bool:
    """The WHATWG URL parser's view: is this a javascript:/vbscript:/active data: URL?"""
    url = _URL_INSIDE.sub("", html.unescape(value).strip(_URL_EDGES)).lower()
    url = url.split("url=", 1)[1].strip(_URL_EDGES) if "url=" in url else url  # meta refresh
    if url.startswith("data:"):
        return not _SAFE_DATA.match(url)
    return url.startswith(_SCRIPT_SCHEMES)


def _css_script(css: str) -> bool:
    """Script in CSS once escapes (``\\6a`` or ``\\j``), comments and spaces are undone."""
    css = _CSS_COMMENT.sub("", html.unescape(css))
    css = _CSS_ESCAPE.sub(lambda m: chr(min(int(m.group(1), 16), 0x10FFFF) or 0xFFFD), css)
    css = re.sub(r"\s+", "", css.replace("\\", ""))
    return bool(_CSS_SCRIPT.search(css))


def _attribute_problem(tag: str, name: str, value: str | None) -> str | None:
    value = value or ""
    if name.startswith("on"):
        return f"<{tag} {name}=…> event handler"
    if name in URL_ATTRIBUTES and _script_url(value):
        return f"<{tag} {name}={value[:60]!r}> script URL"
    if name == "style" and _css_script(value):
        return f"<{tag} style={value[:60]!r}> script in CSS"
    if (tag, name) == ("meta", "http-equiv") and value.strip().lower() in ("refresh", "set-cookie"):
        return f"<meta http-equiv={value!r}>"
    return None


class _Tokens(HTMLParser):
    """The standard library's tokenizer: a second opinion to lxml's tree builder."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: Counter[str] = Counter()
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DANGEROUS_TAGS:
            self.found[f"<{tag}>"] += 1
        for name, value in attrs:
            problem = _attribute_problem(tag, name.lower(), value)
            if problem is not None:
                self.found[problem] += 1
        self._style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._style = False

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style and _css_script(data):
            self.found["script in a <style> block"] += 1


def risky(document: str) -> Counter[str]:
    """What in ``document`` could run script (and how many watched elements it holds).

    Seen by lxml's tree builder and by the standard library's tokenizer, which disagree on
    broken markup. A page is safe when this equals what the same page made from benign input
    gives: the template's own ``<style>`` and forms are not the input's doing.
    """
    found: Counter[str] = Counter()
    if document.strip():
        root = lxml.html.document_fromstring(document)
        for element in root.iter():
            if not isinstance(element.tag, str):
                continue
            tag = element.tag.lower()
            if tag in DANGEROUS_TAGS:
                found[f"<{tag}>"] += 1
            elif tag in WATCHED_TAGS:
                found[f"<{tag}> element"] += 1
            for name, value in element.attrib.items():
                problem = _attribute_problem(tag, name.lower(), value)
                if problem:
                    found[problem] += 1
            if tag == "style" and _css_script(element.text_content()):
                found["script in a <style> block"] += 1
    tokens = _Tokens()
    tokens.feed(document)
    tokens.close()
    for problem, n in tokens.found.items():
        found[f"{problem} (html.parser)"] += n
    return found


def executable(document: str) -> Counter[str]:
    """Only what could run script (no watched-element counts)."""
    return Counter({k: n for k, n in risky(document).items() if not k.endswith(" element")})


# -- the OWASP payloads --------------------------------------------------------------------------

PAYLOAD_FILE = Path(__file__).with_name("xss_payloads.txt")
_ESCAPES = {"{TAB}": "\t", "{LF}": "\n", "{CR}": "\r", "{NUL}": "\x00", "{FF}": "\x0c"}


def xss_payloads() -> list[str]:
    """The payloads of ``xss_payloads.txt`` (``#`` lines are comments; ``{TAB}`` etc. escapes)."""
    payloads = []
    for line in PAYLOAD_FILE.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        for token, char in _ESCAPES.items():
            line = line.replace(token, char)
        payloads.append(line)
    return payloads


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    """A CSV file as Excel writes one: CRLF line ends, so a lone CR or LF in a field is quoted."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()
