"""Editions: create, plan (fan-out in SQL), split into batches, report progress, finish.

Planning is one ``INSERT … SELECT`` of eligible readers (DESIGN.md invariant 2); batches are
keyset ranges of delivery ids; counts are derived from deliveries and rolled up onto the
edition when no work remains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from mailer.dispatch import ALERTS_QUEUE, DIGESTS_QUEUE, Batch
from mailer.models import (
    OPEN_DELIVERY,
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    EditionStory,
    Story,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from mailer.rendering import Renderer, StoryView

BREAKING_SLUG = "breaking"
DIGEST_STORY_LIMIT = 10

Clock = Callable[[], datetime]


class EditionError(ValueError):
    """A request about an edition that cannot be honoured (unknown story, empty digest…)."""


def queue_for(edition: Edition) -> str:
    """Alerts have their own queue and workers, so a running digest never delays them."""
    return ALERTS_QUEUE if edition.kind == EditionKind.ALERT else DIGESTS_QUEUE


def story_view(story: Story) -> StoryView:
    return StoryView(
        title=story.title,
        summary=story.summary,
        url=story.url,
        published_at=story.published_at,
        is_breaking=story.is_breaking,
        image_url=story.image_url,
        topic_name=story.topic.name,
    )


def topic_ids_for(session: Session, edition: Edition) -> list[int]:
    """Alerts reach the story's topic and the "breaking" list; digests their own topic."""
    ids = [edition.topic_id]
    if edition.kind == EditionKind.ALERT:
        breaking = session.scalar(select(Topic.id).where(Topic.slug == BREAKING_SLUG))
        if breaking is not None and breaking not in ids:
            ids.append(breaking)
    return ids


def eligible(
    subscriber_id: ColumnElement[Any] | InstrumentedAttribute[Any],
    topic_ids: Sequence[int],
    cadence: str,
) -> ColumnElement[bool]:
    """The one definition of "this reader should get this edition".

    Used when planning and again when every batch is claimed, so an unsubscribe or a
    suppression committed mid-edition is honoured by every later batch (invariant 7).
    """
    # An alias, so the check correlates with the outer row even when that row is a subscriber
    # (planning) and not only when it is a delivery (claiming).
    reader = aliased(Subscriber)
    return and_(
        exists().where(
            reader.id == subscriber_id,
            reader.status == SubscriberStatus.ACTIVE,
            reader.email.is_not(None),
            # A reader who paused everything from the preferences page gets nothing meanwhile.
            or_(reader.paused_until.is_(None), reader.paused_until <= utcnow()),
            ~exists().where(Suppression.email_hash == reader.email_hash),
        ),
        exists().where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.topic_id.in_(topic_ids),
            Subscription.cadence == cadence,
        ),
    )


def create_alert(
    session: Session, story_id: int, renderer: Renderer, now: Clock = utcnow
) -> tuple[Edition, bool]:
    """The alert edition for a story: (edition, created). Idempotent per story."""
    existing = session.scalar(
        select(Edition).where(Edition.kind == EditionKind.ALERT, Edition.story_id == story_id)
    )
    if existing is not None:
        return existing, False
    story = session.get(Story, story_id)
    if story is None:
        raise EditionError(f"no story with id {story_id}")
    rendered = renderer.render_alert(story_view(story), topic_name=story.topic.name)
    edition = Edition(
        kind=EditionKind.ALERT,
        topic_id=story.topic_id,
        cadence=Cadence.INSTANT,
        story_id=story.id,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        created_at=now(),
    )
    session.add(edition)
    session.flush()
    return edition, True


def last_digest_time(session: Session, topic_id: int, cadence: str) -> datetime | None:
    return session.scalar(
        select(func.max(Edition.started_at)).where(
            Edition.kind == EditionKind.DIGEST,
            Edition.topic_id == topic_id,
            Edition.cadence == cadence,
            Edition.status.in_([EditionStatus.SENDING, EditionStatus.SENT]),
        )
    )


def last_schedule_time(session: Session, schedule_id: int) -> datetime | None:
    """End of the window of the schedule's last digest that went out (or is going out)."""
    return session.scalar(
        select(func.max(Edition.started_at)).where(
            Edition.schedule_id == schedule_id,
            Edition.status.in_([EditionStatus.SENDING, EditionStatus.SENT]),
        )
    )


def create_digest(
    session: Session,
    topic_slug: str,
    cadence: str,
    renderer: Renderer,
    now: Clock = utcnow,
    limit: int = DIGEST_STORY_LIMIT,
    schedule_id: int | None = None,
    due_at: datetime | None = None,
) -> Edition:
    """A digest of the topic's stories since its last digest at this cadence, breaking first.

    A scheduled digest (``schedule_id`` and ``due_at``) covers the stories published since
    that schedule's last sent edition, up to its due time; its first edition falls back to
    the topic and cadence's last digest, else to one period (a day or a week) before it.
    """
    if cadence not in (Cadence.DAILY, Cadence.WEEKLY):
        raise EditionError(f"a digest's cadence is daily or weekly, not {cadence!r}")
    # Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises): two operators sending
    # the same digest at once would otherwise both read "since the last digest" before either
    # commits, and every reader would get it twice.
    topic = session.scalar(select(Topic).where(Topic.slug == topic_slug).with_for_update())
    if topic is None:
        raise EditionError(f"no topic {topic_slug!r}")
    since = last_digest_time(session, topic.id, cadence)
    # A scheduled digest's window ends at its due time, whenever the beat gets to it (after
    # an outage too), so consecutive windows of a schedule neither overlap nor leave gaps.
    moment = now()
    issued = due_at or moment
    if schedule_id is not None:
        period = timedelta(days=7 if cadence == Cadence.WEEKLY else 1)
        since = last_schedule_time(session, schedule_id) or since or issued - period
    # Not yet published (a future published_at) waits for the next digest, not two of them.
    query = select(Story).where(Story.topic_id == topic.id, Story.published_at <= issued)
    if since is not None:
        query = query.where(Story.published_at > since)
    if schedule_id is not None:
        # Each story once per schedule, even if the site later moves its publication date.
        query = query.where(
            ~exists().where(
                EditionStory.story_id == Story.id,
                EditionStory.edition_id == Edition.id,
                Edition.schedule_id == schedule_id,
                Edition.status.in_([EditionStatus.SENDING, EditionStatus.SENT]),
            )
        )
    stories = session.scalars(
        query.order_by(Story.is_breaking.desc(), Story.published_at.desc()).limit(limit)
    ).all()
    # started_at is the window's end: the next digest starts exactly where this one stopped.
    edition = Edition(
        kind=EditionKind.DIGEST,
        topic_id=topic.id,
        cadence=cadence,
        schedule_id=schedule_id,
        due_at=due_at,
        created_at=moment,
        started_at=issued,
    )
    if not stories:
        edition.status = EditionStatus.SKIPPED
        edition.status_reason = "no new stories since the last digest"
        session.add(edition)
        session.flush()
        return edition
    rendered = renderer.render_digest(
        [story_view(s) for s in stories], topic_name=topic.name, cadence=cadence, issued_at=issued
    )
    edition.subject, edition.html, edition.text = rendered.subject, rendered.html, rendered.text
    edition.stories = [EditionStory(story_id=s.id, position=i) for i, s in enumerate(stories)]
    session.add(edition)
    session.flush()
    return edition


def plan(session: Session, edition: Edition, now: Clock = utcnow) -> int:
    """Fan the edition out to its readers with one INSERT … SELECT; returns rows added.

    Safe to run twice: the unique (edition, subscriber) pair and ON CONFLICT DO NOTHING mean
    a second plan adds nobody twice.
    """
    topic_ids = topic_ids_for(session, edition)
    moment = now()
    readers = (
        select(
            literal(edition.id).label("edition_id"),
            Subscriber.id,
            literal(DeliveryStatus.QUEUED.value).label("status"),
            literal(0).label("attempts"),
            literal(moment, Delivery.next_attempt_at.type).label("next_attempt_at"),
            literal(moment, Delivery.created_at.type).label("created_at"),
        )
        .where(eligible(Subscriber.id, topic_ids, edition.cadence))
        .order_by(Subscriber.id)
    )
    columns = ["edition_id", "subscriber_id", "status", "attempts", "next_attempt_at", "created_at"]
    dialect = session.get_bind().dialect.name
    insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert_(Delivery)
        .from_select(columns, readers)
        .on_conflict_do_nothing(index_elements=["edition_id", "subscriber_id"])
    )
    count = select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition.id)
    before = session.scalar(count) or 0
    session.execute(statement)  # (psycopg reports no rowcount for INSERT … SELECT)
    edition.status = EditionStatus.SENDING
    edition.started_at = edition.started_at or moment
    edition.progress_at = moment
    edition.total_count = session.scalar(count) or 0
    return edition.total_count - before


def batches(
    session: Session, edition_id: int, size: int, statuses: Sequence[str] = (DeliveryStatus.QUEUED,)
) -> list[Batch]:
    """Keyset ranges of about ``size`` delivery ids in ``statuses``, found in SQL."""
    numbered = (
        select(Delivery.id, func.row_number().over(order_by=Delivery.id).label("n"))
        .where(Delivery.edition_id == edition_id, Delivery.status.in_(statuses))
        .subquery()
    )
    starts = list(
        session.scalars(
            select(numbered.c.id).where((numbered.c.n - 1) % size == 0).order_by(numbered.c.id)
        )
    )
    if not starts:
        return []
    last = session.scalar(
        select(func.max(Delivery.id)).where(
            Delivery.edition_id == edition_id, Delivery.status.in_(statuses)
        )
    )
    assert last is not None
    ends = [start - 1 for start in starts[1:]] + [last]
    return [Batch(edition_id, a, b) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class Progress:
    edition_id: int
    status: str
    total: int
    counts: dict[str, int]

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if s not in OPEN_DELIVERY)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def progress(session: Session, edition: Edition) -> Progress:
    """Live counts by delivery status (falls back to the rolled-up counts after pruning)."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.edition_id == edition.id)
        .group_by(Delivery.status)
    ).all()
    counts = {str(status): int(n) for status, n in rows}
    if not counts and edition.total_count:
        counts = {
            DeliveryStatus.SENT: edition.sent_count,
            DeliveryStatus.FAILED: edition.failed_count,
            DeliveryStatus.BOUNCED: edition.bounced_count,
            DeliveryStatus.SUPPRESSED: edition.suppressed_count,
            DeliveryStatus.CANCELLED: edition.cancelled_count,
        }
    total = sum(counts.values()) or edition.total_count
    return Progress(edition.id, edition.status, total, counts)


def finish_if_done(session: Session, edition_id: int, now: Clock = utcnow) -> bool:
    """Roll counts up onto a sending edition once none of its deliveries is open."""
    edition = session.get(Edition, edition_id)
    if edition is None or edition.status != EditionStatus.SENDING:
        return False
    still_open = session.scalar(
        select(Delivery.id)
        .where(Delivery.edition_id == edition_id, Delivery.status.in_(OPEN_DELIVERY))
        .limit(1)
    )
    if still_open is not None:
        return False
    counts = progress(session, edition).counts
    sent = counts.get(DeliveryStatus.SENT, 0)
    total = sum(counts.values())
    tried = counts.get(DeliveryStatus.FAILED, 0) + counts.get(DeliveryStatus.BOUNCED, 0)
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Edition)
            .where(Edition.id == edition_id, Edition.status == EditionStatus.SENDING)
            .values(
                # "failed" only when messages were tried and none went out (readers who left
                # before their turn are not a failure).
                status=EditionStatus.FAILED if not sent and tried else EditionStatus.SENT,
                finished_at=now(),
                total_count=total,
                sent_count=sent,
                failed_count=counts.get(DeliveryStatus.FAILED, 0),
                bounced_count=counts.get(DeliveryStatus.BOUNCED, 0),
                suppressed_count=counts.get(DeliveryStatus.SUPPRESSED, 0),
                cancelled_count=counts.get(DeliveryStatus.CANCELLED, 0),
            )
        ),
    )
    return bool(result.rowcount)


def set_paused(session: Session, edition_id: int, paused: bool, reason: str = "") -> Edition:
    """Pause stops new claims at once; resume lets them go on (the caller re-dispatches)."""
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise EditionError(f"no edition with id {edition_id}")
    allowed_from = EditionStatus.SENDING if paused else EditionStatus.PAUSED
    if edition.status != allowed_from:
        raise EditionError(f"edition {edition_id} is {edition.status}, not {allowed_from}")
    edition.status = EditionStatus.PAUSED if paused else EditionStatus.SENDING
    edition.status_reason = reason
    return edition


def cancel(session: Session, edition_id: int, now: Clock = utcnow) -> Edition:
    """Cancel: readers not yet sent are marked cancelled; messages in flight finish."""
    edition = session.get(Edition, edition_id)
    if edition is None:
        raise EditionError(f"no edition with id {edition_id}")
    if edition.status not in (EditionStatus.SENDING, EditionStatus.PAUSED, EditionStatus.PLANNED):
        raise EditionError(f"edition {edition_id} is {edition.status} and cannot be cancelled")
    session.execute(
        update(Delivery)
        .where(
            Delivery.edition_id == edition_id,
            or_(
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.status == DeliveryStatus.DEFERRED,
            ),
        )
        .values(status=DeliveryStatus.CANCELLED)
    )
    edition.status = EditionStatus.CANCELLED
    edition.finished_at = now()
    return edition
