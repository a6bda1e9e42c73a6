"""Stories: added by editors or loaded from files, sanitised, de-duplicated by guid."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nh3
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.models import Story, Topic, utcnow

SAMPLES = Path(__file__).resolve().parent / "samples"

# nh3's defaults drop scripts, event handlers and javascript: URLs; keep the bidi attribute
# that Arabic copy with embedded Latin text relies on.
_ATTRIBUTES = {tag: set(attrs) | {"dir"} for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
for _tag in nh3.ALLOWED_TAGS:
    _ATTRIBUTES.setdefault(_tag, {"dir"})


def sanitise(html: str) -> str:
    """Editor HTML made safe for every template and page."""
    return nh3.clean(html, attributes=_ATTRIBUTES)


@dataclass(frozen=True)
class StoryInput:
    title: str
    url: str
    topic: str
    summary: str = ""
    body_html: str = ""
    is_breaking: bool = False
    published_at: datetime | None = None
    guid: str | None = None
    image_url: str | None = None
    source_feed: str | None = None


def ensure_topics(session: Session, path: Path = SAMPLES / "topics.json") -> None:
    """Create the newsroom's topics that do not exist yet."""
    existing = set(session.scalars(select(Topic.slug)))
    for position, item in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        if item["slug"] not in existing:
            session.add(
                Topic(
                    slug=item["slug"],
                    name=item["name"],
                    description=item.get("description", ""),
                    position=position,
                )
            )
    session.flush()


def upsert_story(session: Session, data: StoryInput) -> tuple[Story, bool]:
    """Insert the story, or update it in place when its guid is known: (story, created)."""
    if not data.title.strip() or any(
        unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in data.title
    ):
        # Controls (TAB, ESC, U+2028…) would reach the Subject header, where they are refused
        # at send time, failing every reader: refuse them here. Bidi marks (Cf) are fine.
        raise ValueError("a story title is one line of text, without control characters")
    if data.image_url and not data.image_url.lower().startswith(("https://", "http://")):
        raise ValueError("a story image must be an http(s) URL")
    topic = session.scalar(select(Topic).where(Topic.slug == data.topic))
    if topic is None:
        raise ValueError(f"unknown topic {data.topic!r}")
    guid = data.guid or data.url
    story = session.scalar(select(Story).where(Story.guid == guid))
    created = story is None
    if story is None:
        story = Story(guid=guid)
        session.add(story)
    story.url = data.url
    story.title = data.title.strip()
    story.summary = data.summary.strip()
    story.body_html = sanitise(data.body_html)
    story.topic_id = topic.id
    story.is_breaking = data.is_breaking
    story.published_at = data.published_at or story.published_at or utcnow()
    story.image_url = data.image_url
    story.source_feed = data.source_feed
    session.flush()
    return story, created


def load_samples(session: Session, path: Path = SAMPLES / "stories.json") -> list[Story]:
    """The sample stories (a real article and others like it), idempotently."""
    ensure_topics(session)
    stories = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        published = datetime.fromisoformat(item["published_at"].replace("Z", "+00:00"))
        story, _ = upsert_story(
            session,
            StoryInput(
                guid=item["guid"],
                url=item["url"],
                title=item["title"],
                summary=item.get("summary", ""),
                body_html=item.get("body_html", ""),
                topic=item["topic"],
                is_breaking=bool(item.get("is_breaking")),
                published_at=published.astimezone(UTC),
            ),
        )
        stories.append(story)
    return stories
