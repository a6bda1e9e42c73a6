"""Feed import: sanitised, de-duplicated, updated in place; fetching guarded against SSRF.

Feeds come from files under ``tests/fixtures/feeds`` and from a real HTTP server on 127.0.0.1
(allowed by the configuration's allow-list, as a newsroom's own staging host would be). No
test ever sends a packet outside 127.0.0.0/8: addresses elsewhere are only checked, and
refused before any connection.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from mailer import cli, feeds
from mailer.config import Settings, get_settings
from mailer.feeds import FeedError, UnsafeURL
from mailer.models import Feed, Story
from mailer.stories import StoryInput, upsert_story
from tests.support.cli import use_data_dir
from tests.support.world import World, make_world, migrated_template

__all__ = ["migrated_template"]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
RSS, RSS_EDITED, ATOM = (
    FIXTURES / n for n in ("newsroom.rss", "newsroom-updated.rss", "newsroom.atom")
)
DANGER = ("<script", "onerror", "onclick", "onmouseover", "javascript:", "<iframe", "expression(")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A safety net: should the guard ever regress, these tests still touch only 127.0.0.0/8."""
    connect = socket.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a feed test tried to connect to {address[0]}")
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template)


def stories(world: World) -> dict[str, Story]:
    with Session(world.engine) as session:
        return {s.guid: s for s in session.scalars(select(Story))}


def import_file(world: World, path: Path | str, topic: str = "syria") -> feeds.FeedResult:
    with Session(world.engine) as session:
        result = feeds.import_feed(session, str(path), topic, world.settings)
        session.commit()
    return result


# -- import ----------------------------------------------------------------------------------------


def test_rss_import_is_sanitised_and_has_each_story_once(world: World) -> None:
    result = import_file(world, RSS)
    assert (result.added, result.updated, result.unchanged, result.duplicates) == (3, 0, 0, 2)
    # The item whose link is javascript: is refused with its reason, never stored.
    assert len(result.errors) == 1 and "syria-evil" in result.errors[0]
    found = stories(world)
    assert sorted(found) == [
        "https://news.example.com/syria/crossing",  # no guid: the link stands in
        "syria-1001",
        "syria-1002",
    ]
    ceasefire = found["syria-1001"]
    for bad in DANGER:
        assert bad not in ceasefire.body_html.lower()
        assert bad not in found["syria-1002"].body_html.lower()
    assert "document.cookie" not in ceasefire.body_html and "style=" not in ceasefire.body_html
    # What an Arabic story needs survives: the bidi spans, the safe link, the text.
    assert '<span dir="rtl">حلب</span>' in ceasefire.body_html
    assert '<span dir="ltr">Reuters</span>' in ceasefire.body_html
    assert 'href="https://news.example.com/syria"' in ceasefire.body_html
    assert "نص بنمط خطر" in ceasefire.body_html
    # Summaries are plain text (the templates escape them): no tags, no script text.
    assert ceasefire.summary == "أعلنت الأطراف وقف إطلاق النار."
    assert found["syria-1002"].summary == "تراجعت الليرة السورية & الأسواق تترقب."
    assert ceasefire.is_breaking and not found["syria-1002"].is_breaking  # category عاجل
    assert ceasefire.published_at == datetime(2026, 3, 9, 6, 15, tzinfo=UTC)
    assert ceasefire.image_url == "https://news.example.com/img/aleppo.jpg"
    assert ceasefire.source_feed == str(RSS)


def test_reimport_changes_nothing_and_an_edit_updates_the_story_in_place(world: World) -> None:
    import_file(world, RSS)
    before = stories(world)
    again = import_file(world, RSS)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)

    edited = import_file(world, RSS_EDITED)
    assert (edited.added, edited.updated, edited.unchanged) == (0, 1, 2)
    after = stories(world)
    assert len(after) == 3
    story = after["syria-1001"]
    assert story.id == before["syria-1001"].id
    assert story.title == "عاجل: وقف إطلاق النار يصمد لليوم الثاني في حلب"
    assert "كما أكدت وكالة" in story.body_html and "<script" not in story.body_html


def test_atom_import(world: World) -> None:
    result = import_file(world, ATOM, topic="egypt")
    assert (result.added, result.duplicates, result.errors) == (2, 1, [])
    found = stories(world)
    budget = found["tag:news.example.com,2026:egypt/2001"]
    assert budget.title == "البرلمان يقر الموازنة الجديدة"  # an HTML title made text
    assert budget.is_breaking  # <category term="breaking">
    assert budget.published_at == datetime(2026, 3, 10, 6, tzinfo=UTC)  # 08:00+02:00
    for bad in DANGER:
        assert bad not in budget.body_html.lower()
    assert '<span dir="ltr">2026/2027</span>' in budget.body_html
    assert budget.summary == "أقر مجلس النواب الموازنة العامة."
    inflation = found["tag:news.example.com,2026:egypt/2002"]
    assert inflation.published_at == datetime(2026, 3, 9, 12, tzinfo=UTC)  # from <updated>


def test_a_page_an_editor_added_is_updated_not_duplicated(world: World) -> None:
    with Session(world.engine) as session:
        story, _ = upsert_story(
            session,
            StoryInput(title="مسودة", url="https://news.example.com/syria/lira", topic="syria"),
        )
        session.commit()
        editor_id = story.id
    result = import_file(world, RSS)
    assert (result.added, result.updated) == (2, 1)
    with Session(world.engine) as session:
        rows = session.scalars(select(Story).where(Story.url.like("%/syria/lira"))).all()
        assert [(s.id, s.title) for s in rows] == [
            (editor_id, "الليرة السورية تتراجع أمام الدولار")
        ]


def test_bad_feeds_and_items_are_refused_with_a_reason(world: World, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body>not a feed</body></html>")
    with pytest.raises(FeedError, match="not an RSS or Atom feed"):
        import_file(world, page)
    with pytest.raises(FeedError, match="cannot read"):
        import_file(world, tmp_path / "missing.xml")
    with pytest.raises(ValueError, match="unknown topic"):
        import_file(world, RSS, topic="sport")
    marker = tmp_path / "marker.rss"
    marker.write_text(
        RSS.read_text(encoding="utf-8").replace("افتتاح معبر", "__MLR_email__ معبر"),
        encoding="utf-8",
    )
    result = import_file(world, marker)
    assert result.added == 2 and any("placeholder" in e for e in result.errors)


# -- SSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/feed",
        "http://localhost:8000/feed",
        "http://[::1]/feed",
        "http://[::ffff:127.0.0.1]/feed",
        "http://10.0.0.1/feed",
        "http://172.16.5.4/feed",
        "http://192.168.1.1/feed",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/feed",
        "http://0.0.0.0/feed",
        "http://224.0.0.1/feed",
        "http://240.0.0.1/feed",
        "file:///etc/passwd",
        "ftp://news.example.com/feed",
        "javascript:alert(1)",
        "http:///feed",
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL):
        feeds.check_url(url, set())


def test_the_allow_list_names_a_host_or_a_host_and_port() -> None:
    feeds.check_url("http://93.184.215.14/feed.xml", set())  # public: fine (never fetched)
    feeds.check_url("http://127.0.0.1:8080/feed", {"127.0.0.1:8080"})
    feeds.check_url("http://127.0.0.1:9090/feed", {"127.0.0.1"})
    with pytest.raises(UnsafeURL):
        feeds.check_url("http://127.0.0.1:9090/feed", {"127.0.0.1:8080"})


@dataclass
class Site:
    """A newsroom's site on 127.0.0.1: a feed with validators, redirects, failures."""

    body: bytes = RSS.read_bytes()
    etag: str = '"v1"'
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()
    modified = "Mon, 09 Mar 2026 06:20:00 GMT"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.path, dict(self.headers.items())))
            redirects = {
                "/old": "/feed.xml",
                "/to-metadata": "http://169.254.169.254/latest/meta-data/",
                "/to-private": "http://10.0.0.1/feed.xml",
                "/to-other-port": "http://127.0.0.1:1/feed.xml",
                "/to-file": "file:///etc/passwd",
                "/loop": "/loop",
            }
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.end_headers()
            elif self.path == "/feed.xml":
                if self.headers.get("If-None-Match") == state.etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("ETag", state.etag)
                self.send_header("Last-Modified", modified)
                self.send_header("Content-Length", str(len(state.body)))
                self.end_headers()
                self.wfile.write(state.body)
            else:
                self.send_error(500, "broken")

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def allowing(settings: Settings, site: Site) -> Settings:
    return settings.model_copy(update={"feed_allow_hosts": f"127.0.0.1:{site.port}"})


def test_fetch_is_conditional_and_follows_safe_redirects(world: World, site: Site) -> None:
    settings = allowing(world.settings, site)
    first = feeds.fetch(f"{site.base}/old", settings)
    assert (first.status, first.url, first.etag) == (200, f"{site.base}/feed.xml", '"v1"')
    assert first.content == RSS.read_bytes()
    again = feeds.fetch(site.base + "/feed.xml", settings, etag=first.etag)
    assert again.not_modified and again.content == b""
    assert site.requests[-1][1]["If-None-Match"] == '"v1"'
    with pytest.raises(FeedError, match="larger than"):
        feeds.fetch(site.base + "/feed.xml", settings, max_bytes=100)
    with pytest.raises(FeedError, match="HTTP 500"):
        feeds.fetch(site.base + "/gone", settings)
    with pytest.raises(FeedError, match="more than 5 redirects"):
        feeds.fetch(site.base + "/loop", settings)
    assert [path for path, _ in site.requests].count("/loop") == 6


def test_the_guard_refuses_loopback_and_redirects_to_private_addresses(
    world: World, site: Site
) -> None:
    # Without the allow-list, 127.0.0.1 is refused before any connection is made.
    with pytest.raises(UnsafeURL, match="non-public"):
        feeds.fetch(site.base + "/feed.xml", world.settings)
    assert site.requests == []
    settings = allowing(world.settings, site)
    for path in ("/to-metadata", "/to-private", "/to-other-port", "/to-file"):
        with pytest.raises(UnsafeURL):
            feeds.fetch(site.base + path, settings)
    # Only the allowed host was ever asked for anything.
    paths = ["/to-metadata", "/to-private", "/to-other-port", "/to-file"]
    assert [path for path, _ in site.requests] == paths


def test_polling_uses_etags_and_records_errors(world: World, site: Site) -> None:
    settings = allowing(world.settings, site)
    with Session(world.engine) as session:
        feeds.add_feed(session, site.base + "/feed.xml", "syria", settings)
        feeds.add_feed(session, site.base + "/broken.xml", "egypt", settings)
        with pytest.raises(UnsafeURL):
            feeds.add_feed(session, "http://169.254.169.254/", "syria", settings)
        session.commit()
    start = datetime(2026, 3, 9, 7, tzinfo=UTC)
    first = feeds.poll_due(world.engine, settings, now=lambda: start)
    assert [(r.added, len(r.errors)) for r in first] == [(3, 1), (0, 1)]
    assert "HTTP 500" in first[1].errors[0]
    # Polled a minute ago: not due again (min_interval is 5 minutes).
    assert feeds.poll_due(world.engine, settings, now=lambda: start + timedelta(minutes=1)) == []
    later = feeds.poll_due(world.engine, settings, now=lambda: start + timedelta(minutes=6))
    assert later[0].not_modified and site.requests[-2][1]["If-None-Match"] == '"v1"'
    # The site edits a story: a new ETag, the story updated in place.
    site.body, site.etag = RSS_EDITED.read_bytes(), '"v2"'
    edited = feeds.poll_due(world.engine, settings, now=lambda: start + timedelta(minutes=12))
    assert (edited[0].added, edited[0].updated) == (0, 1)
    with Session(world.engine) as session:
        rows = {f.url.rsplit("/", 1)[1]: f for f in session.scalars(select(Feed))}
        assert session.scalar(select(func.count()).select_from(Story)) == 3
    assert (rows["feed.xml"].etag, rows["feed.xml"].last_error) == ('"v2"', None)
    assert rows["feed.xml"].last_modified == "Mon, 09 Mar 2026 06:20:00 GMT"
    assert "HTTP 500" in (rows["broken.xml"].last_error or "")


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from use_data_dir(tmp_path, monkeypatch)


def mailer(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def test_feed_commands(cli_data: Path, site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    mailer("db", "upgrade")
    imported = json.loads(
        mailer("stories", "import-feed", str(RSS), "--topic", "syria", "--json").stdout
    )
    assert (imported["added"], imported["duplicates"], len(imported["errors"])) == (3, 2, 1)
    text = mailer("stories", "import-feed", str(RSS_EDITED), "--topic", "syria").stdout
    assert "0 added, 1 updated, 2 unchanged" in " ".join(text.split())
    refused = mailer("stories", "import-feed", site.base + "/feed.xml", "--topic", "syria", code=1)
    assert "non-public" in refused.stderr and site.requests == []

    monkeypatch.setenv("MAILER_FEED_ALLOW_HOSTS", f"127.0.0.1:{site.port}")
    get_settings.cache_clear()
    added = mailer("feeds", "add", site.base + "/feed.xml", "--topic", "syria")
    assert added.stdout.splitlines()[0] == "1"
    polled = json.loads(mailer("feeds", "poll", "--json").stdout)
    assert [(p["unchanged"], p["updated"]) for p in polled] == [(2, 1)]  # the site's copy
    assert "not modified" in mailer("feeds", "poll", "--force").stdout
    assert "no feed is due" in mailer("feeds", "poll").stdout
    listed = json.loads(mailer("feeds", "list", "--json").stdout)
    assert [(f["id"], f["topic"], f["last_error"]) for f in listed] == [(1, "syria", None)]
