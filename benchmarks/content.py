"""What the benchmarks send: the sample stories as a 10-story Arabic digest.

Each scenario gets its own topic (``bench-…``) with ten fresh copies of the samples, so its
digest is the full-size one (about 23 KB) and no scenario's "since the last digest" window
depends on another's.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.message import MessageSpec, MessageTemplate
from mailer.models import Topic
from mailer.rendering import RenderedEmail, Renderer, StoryView
from mailer.stories import SAMPLES, StoryInput, upsert_story
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, Tokens

STORY_COUNT = 10


def samples() -> list[dict[str, str]]:
    items: list[dict[str, str]] = json.loads((SAMPLES / "stories.json").read_text("utf-8"))
    return items


def story_views(count: int = STORY_COUNT) -> list[StoryView]:
    """The samples as the renderer sees them (no database), newest first."""
    now = datetime.now(UTC)
    return [
        StoryView(
            title=item["title"],
            summary=item.get("summary", ""),
            url=item["url"],
            published_at=now - timedelta(minutes=i),
            is_breaking=bool(item.get("is_breaking")),
            topic_name="سوريا",
        )
        for i, item in enumerate(samples()[:count])
    ]


def add_topic(session: Session, slug: str) -> int:
    topic_id = session.scalar(select(Topic.id).where(Topic.slug == slug))
    if topic_id is None:
        topic = Topic(slug=slug, name=f"نشرة {slug}", description="", position=100)
        session.add(topic)
        session.flush()
        topic_id = topic.id
    return topic_id


def add_stories(session: Session, slug: str, count: int = STORY_COUNT) -> list[int]:
    """``count`` fresh stories in the topic, published in the last hour."""
    now = datetime.now(UTC)
    ids = []
    for i, item in enumerate((samples() * 2)[:count]):
        story, _ = upsert_story(
            session,
            StoryInput(
                title=item["title"],
                summary=item.get("summary", ""),
                body_html=item.get("body_html", ""),
                url=f"{item['url'].split('?')[0]}?bench={uuid.uuid4().hex[:8]}",
                topic=slug,
                is_breaking=bool(item.get("is_breaking")),
                published_at=now - timedelta(minutes=i + 1),
            ),
        )
        ids.append(story.id)
    return ids


def render_digest(renderer: Renderer) -> RenderedEmail:
    return renderer.render_digest(
        story_views(), topic_name="سوريا", cadence="daily", issued_at=datetime.now(UTC)
    )


def digest_template(settings: Settings, rendered: RenderedEmail) -> MessageTemplate:
    spec = MessageSpec(
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        sender=settings.sender,
        reply_to=settings.reply_to or None,
        list_id=settings.list_id,
        kind="digest",
        feedback_id=f"1:digest:{settings.feedback_id_sender}",
    )
    return MessageTemplate.build(spec, eightbit=True)


def reader_values(
    settings: Settings, tokens: Tokens, key: str | int, reader: int, date: str
) -> dict[str, str]:
    """A reader's placeholder values, computed as the sender computes them."""
    email = f"reader{reader}@d{reader % 1000}.example.net"
    unsubscribe = tokens.sign(UNSUBSCRIBE, [reader, 1, "daily"])
    return {
        ph.TO: email,
        ph.MESSAGE_ID: f"<{key}.{reader}.bench@example.com>",
        ph.DATE: date,
        ph.UNSUBSCRIBE_URL: f"{settings.base_url}/unsubscribe/{unsubscribe}",
        ph.UNSUBSCRIBE_MAILTO: f"mailto:unsubscribe@example.com?subject={unsubscribe}",
        ph.PREFERENCES_URL: f"{settings.base_url}/preferences/{tokens.sign(PREFERENCES, reader)}",
        ph.GREETING: "مرحباً قارئ،",
        ph.EMAIL: email,
    }
