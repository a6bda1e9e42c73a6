"""The data model (DESIGN.md §3): SQLAlchemy 2 typed models.

Statuses are short strings checked in Python (:class:`enum.StrEnum`) rather than database enum
types, so that one Alembic migration runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for the big table.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Cadence(StrEnum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"


class EditionKind(StrEnum):
    ALERT = "alert"
    DIGEST = "digest"


class EditionStatus(StrEnum):
    PLANNED = "planned"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"
    SKIPPED = "skipped"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


#: Deliveries that still need work; an edition is finished when none of its rows is in here.
OPEN_DELIVERY = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.DEFERRED)


class Base(DeclarativeBase):
    pass


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Normalised address: domain in IDNA form, the local part as given.
    email: Mapped[str | None] = mapped_column(String(320))
    # Keyed hash of the case-folded address: unique, and what suppressions match on.
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str] = mapped_column(String(16), default="ar")
    timezone: Mapped[str] = mapped_column(String(64), default="Africa/Cairo")
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING)
    needs_smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_ip: Mapped[str | None] = mapped_column(String(64))
    consent_user_agent: Mapped[str | None] = mapped_column(String(400))
    consent_source: Mapped[str | None] = mapped_column(String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A reader may pause everything for N days from the preferences page.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Soft bounces add to a score that decays; past the threshold the address is suppressed.
    bounce_score: Mapped[float] = mapped_column(default=0.0)
    bounce_score_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan"
    )


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "topic_id", "cadence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id", ondelete="CASCADE"))
    cadence: Mapped[str] = mapped_column(String(16), default=Cadence.INSTANT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    topic: Mapped[Topic] = relationship()


Index("ix_subscriptions_topic_cadence", Subscription.topic_id, Subscription.cadence)


class Story(Base):
    __tablename__ = "stories"

    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(500), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    title: Mapped[str] = mapped_column(String(500))
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    is_breaking: Mapped[bool] = mapped_column(Boolean, default=False)
    image_url: Mapped[str | None] = mapped_column(String(2000))
    source_feed: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    topic: Mapped[Topic] = relationship()


class Edition(Base):
    __tablename__ = "editions"
    __table_args__ = (
        # One alert per story, however many editors press the button at once.
        UniqueConstraint("kind", "story_id", name="uq_editions_alert_story"),
        # One edition per schedule and due time, however many beat processes tick.
        UniqueConstraint("schedule_id", "due_at", name="uq_editions_schedule_due"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    cadence: Mapped[str] = mapped_column(String(16), default=Cadence.INSTANT)
    story_id: Mapped[int | None] = mapped_column(ForeignKey("stories.id"))
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=EditionStatus.PLANNED)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(String(500), default="")
    # Rendered once at planning (inlined HTML and text with per-reader markers), so every
    # worker sends the same content even if templates change mid-edition.
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Last time a batch was claimed: the sweeper re-dispatches an edition that stalls.
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Counts rolled up from deliveries when the edition finishes (they survive pruning).
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    bounced_count: Mapped[int] = mapped_column(Integer, default=0)
    suppressed_count: Mapped[int] = mapped_column(Integer, default=0)
    cancelled_count: Mapped[int] = mapped_column(Integer, default=0)

    topic: Mapped[Topic] = relationship()
    story: Mapped[Story | None] = relationship()
    stories: Mapped[list[EditionStory]] = relationship(
        order_by="EditionStory.position", cascade="all, delete-orphan"
    )


class EditionStory(Base):
    __tablename__ = "edition_stories"

    edition_id: Mapped[int] = mapped_column(
        ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True
    )
    story_id: Mapped[int] = mapped_column(ForeignKey("stories.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    story: Mapped[Story] = relationship()


class Delivery(Base):
    """One reader of one edition: the record that makes "exactly once" checkable."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        # Claiming a batch: by edition, status and id range.
        Index("ix_deliveries_claim", "edition_id", "status", "id"),
        # The sweeper: due deferred rows and expired leases. Partial, so planning and sending
        # (queued and sent rows, nearly all of them) never add an entry.
        Index(
            "ix_deliveries_due",
            "status",
            "next_attempt_at",
            postgresql_where=text("status IN ('sending', 'deferred')"),
            sqlite_where=text("status IN ('sending', 'deferred')"),
        ),
        # No index on subscriber_id alone (migration 0005): a reader's rows are found through
        # the unique (edition, subscriber) pair, one edition at a time (readers.deliveries_of).
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign keys on the biggest, hottest table: their checks were half the cost of
    # planning (migration 0004). Editions are never deleted, and erasing a reader clears
    # subscriber_id before deleting the subscriber (readers.erase, transactional).
    edition_id: Mapped[int] = mapped_column(Integer)
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_response: Mapped[str | None] = mapped_column(String(1000))
    message_id: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Cleared when a reader asks to be forgotten; the hash alone keeps them suppressed.
    email: Mapped[str | None] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    cadence: Mapped[str] = mapped_column(String(16), default=Cadence.DAILY)
    at_time: Mapped[str | None] = mapped_column(String(5))
    weekdays: Mapped[str | None] = mapped_column(String(32))
    cron: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="Africa/Cairo")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    topic: Mapped[Topic] = relationship()


class SmtpServer(Base):
    __tablename__ = "smtp_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(1000))
    weight: Mapped[int] = mapped_column(Integer, default=1)
    max_connections: Mapped[int] = mapped_column(Integer, default=4)
    rate_per_second: Mapped[float | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    # Taken out of rotation after refusing connections; tried again after this time.
    down_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


class TransactionalMessage(Base):
    """One confirmation or welcome email: one row and one Message-ID per message.

    They go through the same transport, retries and rate limits as editions; self-service
    ones on the priority (alerts) queue, those caused by a bulk import on the bulk queue.
    """

    __tablename__ = "transactional_messages"
    __table_args__ = (
        Index("ix_transactional_due", "status", "next_attempt_at"),
        Index("ix_transactional_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL")
    )
    queue: Mapped[str] = mapped_column(String(32), default="alerts")
    # Values for the template (e.g. the confirmation token), never raw header input.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_response: Mapped[str | None] = mapped_column(String(1000))
    message_id: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feed(Base):
    """A site feed polled on a schedule (conditional GET with ETag / Last-Modified)."""

    __tablename__ = "feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """An admin UI user (editor, operator or admin), password hashed with argon2."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
