"""Stories from the site's RSS and Atom feeds: safe fetching, import, scheduled polling.

Fetching guards against SSRF: only http(s), and every hop (redirects are followed by hand, at
most five) must resolve to public addresses, unless ``MAILER_FEED_ALLOW_HOSTS`` names the host.
The connection goes to the address that was checked, so a DNS answer that changes between the
check and the connection (rebinding) cannot lead it elsewhere.

Import de-duplicates by guid (else the link, and a known link keeps its story), updates a story
in place when the site edits it, and sanitises HTML with the same nh3 policy as editor copy.
feedparser is only ever given bytes, never a URL, so it cannot fetch anything by itself.
"""

from __future__ import annotations

import calendar
import html
import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import feedparser
import nh3
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from mailer import placeholders
from mailer.config import Settings
from mailer.models import Feed, Story, Topic, utcnow
from mailer.stories import StoryInput, upsert_story

MAX_REDIRECTS = 5
_SAFE = "/%:@!$&'()*+,;=?~"  # kept as they are when a raw (Arabic) path is percent-encoded
USER_AGENT = "mailer-feed-reader/1.0 (+newsletter)"
BREAKING_TAGS = {"عاجل", "breaking", "breaking news", "أخبار عاجلة"}
_SPACES = re.compile(r"\s+")
# Address kinds a feed may never lead to (unless allow-listed): the server's own network.
_REFUSED = [
    "is_loopback",
    "is_link_local",
    "is_private",
    "is_multicast",
    "is_reserved",
    "is_unspecified",
]
# What counts as "the site edited the story".
_FIELDS = attrgetter(
    "url", "title", "summary", "body_html", "topic_id", "is_breaking", "published_at", "image_url"
)


class FeedError(ValueError):
    """A feed that cannot be fetched or read (the message says why)."""


class UnsafeURL(FeedError):
    """A URL that is not http(s), or that leads to a private, loopback or reserved address."""


@dataclass(frozen=True)
class FetchResult:
    url: str  # after redirects
    status: int
    content: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = ""

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass
class FeedResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    duplicates: int = 0  # repeated items inside the feed itself
    not_modified: bool = False
    source: str = ""
    story_ids: list[int] = field(default_factory=list)


def allow_hosts(settings: Settings) -> set[str]:
    return {h.strip().lower() for h in settings.feed_allow_hosts.split(",") if h.strip()}


# -- fetching ----------------------------------------------------------------------------------


def _target(url: str, allowed: set[str]) -> tuple[str, str, int, list[str]]:
    """(scheme, host, port, addresses to connect to), refusing anything unsafe."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise UnsafeURL(f"{url!r}: only http and https URLs with a host are fetched")
    try:  # an Arabic domain name goes on the wire (and into the allow-list check) as IDNA
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise FeedError(f"{url!r}: bad host name") from exc
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL(f"{url!r}: bad port") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FeedError(f"{url!r}: cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if host in allowed or f"{host}:{port}" in allowed:
        return scheme, host, port, addresses
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if not ip.is_global or any(getattr(ip, flag) for flag in _REFUSED):
            raise UnsafeURL(f"{url!r}: {host} resolves to {ip}, a non-public address")
    return scheme, host, port, addresses


def check_url(url: str, allow_hosts: set[str]) -> None:
    """Raise :class:`UnsafeURL` unless ``url`` is http(s) to public addresses (or allowed)."""
    _target(url, allow_hosts)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)  # checks the name


def fetch(
    url: str,
    settings: Settings,
    *,
    etag: str | None = None,
    modified: str | None = None,
    timeout: float = 10,
    max_bytes: int = 5_000_000,
) -> FetchResult:
    """GET a feed (conditionally); a 304 comes back as ``not_modified``."""
    allowed = allow_hosts(settings)
    headers = {"User-Agent": USER_AGENT, "Accept": "application/rss+xml, application/atom+xml, */*"}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    # Socket timeouts are per operation; a server that trickles bytes meets this deadline.
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, addresses = _target(url, allowed)
        parts = urlsplit(url)
        path = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _SAFE)
        kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        conn = kind(host, port, addresses[0], timeout)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise FeedError(f"{url!r}: redirect without a Location")
                url = urljoin(url, location)
                continue
            if response.status == 304:
                return FetchResult(url, 304, etag=etag, last_modified=modified)
            if response.status != 200:
                raise FeedError(f"{url!r}: HTTP {response.status} {response.reason}")
            body = bytearray()
            while chunk := response.read(65536):
                body += chunk
                if len(body) > max_bytes:
                    raise FeedError(f"{url!r}: larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FeedError(f"{url!r}: took longer than {timeout} s")
            header = response.getheader
            return FetchResult(
                url,
                200,
                bytes(body),
                header("ETag"),
                header("Last-Modified"),
                header("Content-Type", ""),
            )
        except (OSError, http.client.HTTPException) as exc:
            raise FeedError(f"{url!r}: {exc}") from exc
        finally:
            conn.close()
    raise FeedError(f"{url!r}: more than {MAX_REDIRECTS} redirects")


# -- importing ---------------------------------------------------------------------------------


def _text(value: str) -> str:
    """Plain text from feed HTML (titles and summaries are escaped by the templates)."""
    return _SPACES.sub(" ", html.unescape(nh3.clean(value, tags=set()))).strip()


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _entry_input(entry: Any, topic: str, source: str) -> StoryInput:
    link = (entry.get("link") or "").strip()
    if not _is_web_url(link) or len(link) > 2000:
        raise ValueError(f"link {link[:100]!r} is not an http(s) URL of at most 2000 characters")
    title = _text(entry.get("title") or "")
    if not title:
        raise ValueError("no title")
    contents = entry.get("content") or []
    body = contents[0].get("value", "") if contents else entry.get("summary", "")
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    tags = {_SPACES.sub(" ", (t.get("term") or "")).strip().lower() for t in entry.get("tags", [])}
    images = [m.get("url", "") for m in entry.get("media_content", []) if m.get("url")] + [
        e.get("href", "") for e in entry.get("enclosures", []) if e.get("type", "")[:6] == "image/"
    ]
    # The message builder splits rendered copy on these markers: a feed must not smuggle one in.
    if any(placeholders.PATTERN.search(v) for v in (title, link, entry.get("summary") or "")):
        raise ValueError("contains a reserved placeholder marker")
    return StoryInput(
        guid=(entry.get("id") or "").strip()[:500] or link,
        url=link,
        title=title[:500],
        summary=_text(entry.get("summary") or ""),
        body_html=body,
        topic=topic,
        is_breaking=bool(tags & BREAKING_TAGS),
        published_at=datetime.fromtimestamp(calendar.timegm(stamp), UTC) if stamp else None,
        image_url=next((u for u in images if _is_web_url(u)), None),
        source_feed=source,
    )


def import_content(session: Session, content: bytes, topic: str, source: str) -> FeedResult:
    """Import feed bytes into stories (the caller commits); one bad item never stops the rest."""
    if session.scalar(select(Topic.id).where(Topic.slug == topic)) is None:
        raise ValueError(f"unknown topic {topic!r}")
    # nh3 is the one sanitiser (the same rules as editor HTML, dir kept); feedparser's own
    # would run first and hide what nh3 must handle.
    parsed = feedparser.parse(content, sanitize_html=False)
    if not parsed.entries and (parsed.bozo or not parsed.version):  # an empty feed is fine
        raise FeedError(f"{source}: not an RSS or Atom feed ({parsed.get('bozo_exception')})")
    result = FeedResult(source=source)
    seen: set[str] = set()
    for number, entry in enumerate(parsed.entries, start=1):
        label = f"item {number} ({entry.get('id') or entry.get('link')})"
        try:
            data = _entry_input(entry, topic, source)
        except ValueError as exc:
            result.errors.append(f"{label}: {exc}")
            continue
        guid = data.guid or data.url
        if guid in seen or data.url in seen:
            result.duplicates += 1
            continue
        seen.update((guid, data.url))
        story = session.scalar(select(Story).where(Story.guid == guid))
        if story is None:  # the same page known under another guid (an editor added it)
            story = session.scalar(select(Story).where(Story.url == data.url).limit(1))
            if story is not None:
                data = replace(data, guid=story.guid)
        before = _FIELDS(story) if story is not None else None
        try:
            with session.begin_nested():
                story, created = upsert_story(session, data)
        except ValueError as exc:
            result.errors.append(f"{label}: {exc}")
            continue
        result.story_ids.append(story.id)
        if created:
            result.added += 1
        elif before != _FIELDS(story):
            result.updated += 1
        else:
            result.unchanged += 1
    return result


def import_feed(session: Session, source: str, topic: str, settings: Settings) -> FeedResult:
    """Import a feed from a URL (fetched safely) or a file path; the caller commits."""
    if "://" in source:
        fetched = fetch(source, settings)
        return import_content(session, fetched.content, topic, source)
    try:
        content = Path(source).read_bytes()
    except OSError as exc:
        raise FeedError(f"cannot read {source}: {exc.strerror or exc}") from exc
    return import_content(session, content, topic, source)


# -- configured feeds --------------------------------------------------------------------------


def add_feed(session: Session, url: str, topic: str, settings: Settings) -> Feed:
    """Register a feed to poll (its URL is checked now, and again at every fetch)."""
    topic_id = session.scalar(select(Topic.id).where(Topic.slug == topic))
    if topic_id is None:
        raise ValueError(f"unknown topic {topic!r}")
    check_url(url, allow_hosts(settings))
    if session.scalar(select(Feed.id).where(Feed.url == url)) is not None:
        raise ValueError(f"feed {url} is already configured")
    feed = Feed(url=url, topic_id=topic_id, enabled=True)
    session.add(feed)
    session.flush()
    return feed


def poll_due(
    engine: Engine,
    settings: Settings,
    now: Callable[[], datetime] = utcnow,
    min_interval: float = 300,
) -> list[FeedResult]:
    """Poll every enabled feed not polled in ``min_interval`` seconds (conditional GET)."""
    moment = now()
    cutoff = moment - timedelta(seconds=min_interval)
    results = []
    with Session(engine) as session:
        feeds = session.execute(
            select(Feed.id, Feed.url, Topic.slug, Feed.etag, Feed.last_modified)
            .join(Topic, Topic.id == Feed.topic_id)
            .where(Feed.enabled, or_(Feed.last_polled_at.is_(None), Feed.last_polled_at <= cutoff))
            .order_by(Feed.id)
        ).all()
    for feed_id, url, topic, etag, modified in feeds:
        # Claim the feed first (a conditional update), so two pollers never fetch it twice, and
        # hold no transaction during the network I/O.
        with Session(engine) as session, session.begin():
            claimed = session.execute(
                update(Feed)
                .where(
                    Feed.id == feed_id,
                    or_(Feed.last_polled_at.is_(None), Feed.last_polled_at <= cutoff),
                )
                .values(last_polled_at=moment)
            )
        if not getattr(claimed, "rowcount", 0):
            continue
        values: dict[str, Any] = {"last_error": None}
        try:
            fetched = fetch(url, settings, etag=etag, modified=modified)
            if fetched.not_modified:
                result = FeedResult(not_modified=True, source=url)
            else:
                with Session(engine) as session, session.begin():
                    result = import_content(session, fetched.content, topic, url)
                values.update(etag=fetched.etag, last_modified=fetched.last_modified)
        except Exception as exc:  # recorded on the feed for the operator, retried next poll
            result = FeedResult(errors=[str(exc)], source=url)
            values["last_error"] = str(exc)[:1000]
        with Session(engine) as session, session.begin():
            session.execute(update(Feed).where(Feed.id == feed_id).values(**values))
        results.append(result)
    return results
