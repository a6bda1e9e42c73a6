"""The OWASP payloads through every place editor or reader text reaches HTML.

Each runner returns a :class:`Surface`: how many inputs were tried, taken or refused, how many
answers were server errors, and every place where something executable came out (compared with
the same email or page made from benign input, see :func:`tests.hostile.harness.risky`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import lxml.html
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer import transactional
from mailer.models import Story, Topic
from mailer.ratelimit import MemoryLimiter
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, Tokens
from mailer.web import readers
from tests.hostile.apifuzz import Target
from tests.hostile.harness import Newsroom, body, executable, parse, risky


@dataclass
class Surface:
    name: str
    tried: int = 0
    accepted: int = 0
    rejected: int = 0
    server_errors: int = 0
    findings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    #: Where the payload was found again, as text (escaped, so harmless): proof it got there.
    shown: Counter[str] = field(default_factory=Counter)

    def compare(self, where: str, payload: str, document: str, benign: Counter[str]) -> None:
        extra = risky(document) - benign
        if extra:
            self.findings.append(f"{where} ← {payload!r}: {dict(extra)}")
        if shows(document, payload):
            self.shown[where] += 1


def _visible(text: str) -> str:
    return re.sub(r"\s+", " ", _CONTROLS.sub("", text)).strip()


def shows(document: str, payload: str) -> bool:
    """``payload`` is in ``document`` as text or an attribute value, not as markup."""
    if not document.strip():
        return False
    root = lxml.html.document_fromstring(document)
    values = [root.text_content(), *(v for e in root.iter() for v in e.attrib.values())]
    wanted = _visible(payload)[:40]
    return any(wanted in _visible(value) for value in values)


def title_of(payload: str) -> str:
    """The payload as a title: controls become spaces (upsert_story refuses a title holding
    one); the summary and body carry the payload as it is."""
    return _CONTROLS.sub(" ", payload)


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


# -- email ---------------------------------------------------------------------------------------


def email_surface(room: Newsroom, payloads: list[str]) -> Surface:
    """Each payload as a story's title, summary and body and as its reader's name, in an alert;
    then all of them in one digest. The HTML part of the reader's copy is what is checked."""
    surface = Surface("XSS → emails (titles, summaries, names)")
    room.add_reader("benign.xss@example.com", "أمل")
    benign_alert = room.prepared(room.alert(room.publish("عنوان", "ملخص", "<p>نص</p>")))
    benign = room.reader("benign.xss@example.com")
    assert benign is not None
    baseline = risky(body(parse(room.message_for(benign_alert, benign)), "html"))
    for i, payload in enumerate(payloads):
        surface.tried += 1
        address = f"xss{i}@example.com"
        room.add_reader(address, payload)
        reader = room.reader(address)
        assert reader is not None
        story = room.publish(title_of(payload), payload, payload)
        surface.accepted += 1
        html = body(parse(room.message_for(room.prepared(room.alert(story)), reader)), "html")
        surface.compare("alert email", payload, html, baseline)
        with Session(room.engine) as session:
            stored = session.scalar(select(Story.body_html).where(Story.id == story)) or ""
        if executable(stored):
            surface.findings.append(f"stored story HTML ← {payload!r}: {dict(executable(stored))}")
    # One digest listing every payload story (the alerts above marked nothing as sent in it).
    room.add_reader("digest.xss@example.com", "أمل")
    room.import_csv(room.write_csv([{"email": "digest.xss@example.com", "cadence": "daily"}]))
    started = room.service.send_digest("breaking", "daily")
    digest_reader = room.reader("digest.xss@example.com")
    assert digest_reader is not None
    html = body(parse(room.message_for(room.prepared(started.edition_id), digest_reader)), "html")
    surface.compare("digest email", "all payloads", html, baseline)
    room.dispatcher.sent.clear()
    return surface


# -- reader pages --------------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ReaderSite:
    """The reader routes of ``room`` (limits out of the way), as a browser sees them."""

    def __init__(self, room: Newsroom) -> None:
        self.room = room
        app = FastAPI()
        # Wake-ups dispatched in the request, so that the confirmation is there to read at once.
        settings = room.settings.model_copy(update={"wake_linger_seconds": 0})
        app.include_router(
            readers.router(
                settings, room.engine, dispatcher=room.dispatcher, limiter=MemoryLimiter()
            )
        )
        self.client = TestClient(app, base_url=room.settings.base_url)
        self.tokens = Tokens(room.settings)

    def subscribe(self, email: str, name: str) -> tuple[int, str]:
        token = CSRF.search(self.client.get("/subscribe").text)
        assert token is not None
        form = {"csrf_token": token.group(1), "email": email, "name": name}
        answer = self.client.post(
            "/subscribe", data=form | {"topics": ["breaking", "syria"], "cadence": "daily"}
        )
        return answer.status_code, answer.text

    def confirmation_html(self, address: str) -> str:
        """Send the queued transactional messages; the HTML of the one mailed to ``address``."""
        queued, self.room.dispatcher.messages[:] = list(self.room.dispatcher.messages), []
        self.room.transport.sent.clear()
        for _, message_id in queued:
            transactional.send_message(
                self.room.engine, self.room.settings, self.room.transport, message_id
            )
        [data] = [d for _, rcpt, d in self.room.transport.sent if rcpt == address]
        return body(parse(data), "html")

    def preferences(self, subscriber_id: int) -> str:
        return f"/preferences/{self.tokens.sign(PREFERENCES, subscriber_id)}"

    def page(self, path: str) -> tuple[int, str]:
        answer = self.client.get(path)
        return answer.status_code, answer.text


def pages_surface(room: Newsroom, payloads: list[str]) -> Surface:
    """Each payload in the subscribe form (echoed on an error), as a subscriber's name (their
    confirmation email and preferences page), and as a topic name (the unsubscribe page)."""
    surface = Surface("XSS → reader pages and their emails")
    site = ReaderSite(room)
    with Session(room.engine) as session:
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "syria"))

    def set_topic_name(name: str) -> None:
        with Session(room.engine) as session:
            session.execute(update(Topic).where(Topic.id == topic_id).values(name=name))
            session.commit()

    def baselines() -> dict[str, Counter[str]]:
        _, form = site.subscribe("not-an-address", "أمل")
        status, done = site.subscribe("benign.page@example.com", "أمل")
        assert status == 200, done
        reader = room.reader("benign.page@example.com")
        assert reader is not None
        set_topic_name("سوريا")
        return {
            "form": risky(form),
            "done": risky(done),
            "mail": risky(site.confirmation_html("benign.page@example.com")),
            "preferences": risky(
                site.page(f"/preferences/{site.tokens.sign(PREFERENCES, reader.id)}")[1]
            ),
            "unsubscribe": risky(
                site.page(
                    f"/unsubscribe/{site.tokens.sign(UNSUBSCRIBE, [reader.id, topic_id, 'daily'])}"
                )[1]
            ),
        }

    benign = baselines()
    for i, payload in enumerate(payloads):
        surface.tried += 1
        status, form = site.subscribe(payload, payload)  # not an address: the form comes back
        if status >= 500:
            surface.server_errors += 1
        surface.compare("subscribe form error", payload, form, benign["form"])
        address = f"page{i}@example.com"
        status, done = site.subscribe(address, payload)
        if status >= 500:
            surface.server_errors += 1
            continue
        surface.accepted += status == 200
        surface.rejected += status != 200
        if status != 200:
            surface.refusals.append(f"{status} ← {payload!r}")
        surface.compare("check-your-email page", payload, done, benign["done"])
        reader = room.reader(address)
        if reader is None:
            continue
        html = site.confirmation_html(address)
        surface.compare("confirmation email", payload, html, benign["mail"])
        status, prefs = site.page(site.preferences(reader.id))
        surface.server_errors += status >= 500
        surface.compare("preferences page", payload, prefs, benign["preferences"])
        set_topic_name(payload)
        token = site.tokens.sign(UNSUBSCRIBE, [reader.id, topic_id, "daily"])
        status, unsubscribe = site.page(f"/unsubscribe/{token}")
        surface.server_errors += status >= 500
        surface.compare("unsubscribe page", payload, unsubscribe, benign["unsubscribe"])
    set_topic_name("سوريا")
    return surface


# -- JSON API ------------------------------------------------------------------------------------


def api_surface(t: Target, payloads: list[str]) -> Surface:
    """Each payload as a story through ``POST /api/v1/stories``, as a reader's name through
    ``/subscribers/import``; every answer must be JSON, and the edition preview (an email as
    HTML inside JSON) must hold nothing executable."""
    surface = Surface("XSS → JSON API (stories, readers, preview)")
    published = datetime(2026, 11, 25, 9, 30, tzinfo=UTC).isoformat()
    with TestClient(t.app, headers=t.headers, raise_server_exceptions=False) as http:

        def preview(story: Mapping[str, object], reader: str) -> tuple[int, str]:
            made = http.post("/api/v1/stories", json=story)
            if made.status_code >= 300:
                return made.status_code, ""
            alert = http.post("/api/v1/alerts", json={"story_id": made.json()["id"]})
            if alert.status_code >= 300:
                return alert.status_code, ""
            shown = http.get(
                f"/api/v1/editions/{alert.json()['edition_id']}/preview", params={"reader": reader}
            )
            json_only(shown)
            return shown.status_code, shown.json().get("html", "")

        def json_only(answer: object) -> None:
            kind = getattr(answer, "headers", {}).get("content-type", "")
            if not kind.startswith("application/json"):
                surface.findings.append(f"{getattr(answer, 'url', '')} answered {kind!r}")

        benign_story = {"title": "عنوان", "summary": "ملخص", "topic": "breaking"}
        status, html = preview(
            benign_story | {"url": "https://news.example.com/api-xss/benign"}, t.reader
        )
        assert status == 200, status
        baseline = risky(html)
        for i, payload in enumerate(payloads):
            surface.tried += 1
            reader = f"api.xss{i}@example.com"
            imported = http.post(
                "/api/v1/subscribers/import",
                json={"readers": [{"email": reader, "name": payload}], "consented": True},
            )
            json_only(imported)
            if imported.status_code != 200 or imported.json()["errors"]:
                surface.refusals.append(f"name {imported.status_code} ← {payload!r}")
                reader = t.reader  # a name over 200 characters is refused: preview for another
            story = {
                "title": title_of(payload),
                "summary": payload,
                "body_html": payload,
                "topic": "breaking",
                "url": f"https://news.example.com/api-xss/{i}",
                "published_at": published,
            }
            status, html = preview(story, reader)
            surface.server_errors += status >= 500
            surface.accepted += status < 400
            surface.rejected += 400 <= status < 500
            if 400 <= status < 500:
                surface.refusals.append(f"{status} ← {payload!r}")
            if html:
                surface.compare("API preview", payload, html, baseline)
            found = http.get("/api/v1/stories", params={"limit": 1})
            json_only(found)
    return surface
