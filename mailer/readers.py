"""What a reader does from a link in an email: unsubscribe, preferences, pause, export, erase.

An email's unsubscribe link ends the subscription that email was sent for: alerts (every
instant subscription) or that topic's digest at that cadence; a transactional email's link
(scope "all") ends everything. Repeating any of them changes nothing.

The preferences link (signed with purpose ``preferences``) opens the reader's own page:
topics and cadences, time zone, a pause, leaving everything, downloading and erasing their
data. Erasure deletes the reader and keeps only a keyed hash of the address as a suppression,
so an import cannot bring them back silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import ColumnElement, Engine, Select, and_, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.addresses import clean_name
from mailer.models import (
    Cadence,
    Delivery,
    Edition,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    TransactionalMessage,
    utcnow,
)
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, BadToken, Tokens

#: The cadence of an unsubscribe scope that ends every subscription.
EVERYTHING = "all"
#: Suppression reason of a reader who asked to be forgotten.
ERASED = "erased"
MAX_PAUSE_DAYS = 90
#: Deliveries listed in a reader's data download (the newest; the table is the big one).
EXPORT_DELIVERIES = 1000


@dataclass(frozen=True)
class Scope:
    subscriber_id: int
    topic_id: int
    cadence: str

    @property
    def everything(self) -> bool:
        return self.cadence == EVERYTHING


def read_unsubscribe_token(tokens: Tokens, token: str) -> Scope:
    """The scope a link was signed for; BadToken when tampered with or not an unsubscribe link."""
    payload = tokens.verify(UNSUBSCRIBE, token)
    if (
        not isinstance(payload, list)
        or len(payload) != 3
        or not all(isinstance(v, int) for v in payload[:2])
        or payload[2] not in (*Cadence, EVERYTHING)
    ):
        raise BadToken("malformed unsubscribe token")
    return Scope(payload[0], payload[1], payload[2])


def describe(engine: Engine, scope: Scope) -> str:
    """What the link unsubscribes from, in Arabic, for the page."""
    if scope.everything:
        return "كل الرسائل"
    if scope.cadence == Cadence.INSTANT:
        return "التنبيهات العاجلة"
    with engine.connect() as conn:
        name = conn.scalar(select(Topic.name).where(Topic.id == scope.topic_id)) or ""
    period = "اليومية" if scope.cadence == Cadence.DAILY else "الأسبوعية"
    return f"النشرة {period}: {name}"


def unsubscribe(engine: Engine, scope: Scope, *, everything: bool = False) -> bool:
    """End the scoped subscription (or all); returns whether the reader still exists.

    A reader left with no subscription is unsubscribed, also one who never confirmed (the
    confirmation email's own link): their pending confirmation link then stops working.
    """
    everything = everything or scope.everything
    with engine.begin() as conn:
        if conn.scalar(select(Subscriber.id).where(Subscriber.id == scope.subscriber_id)) is None:
            return False
        which = delete(Subscription).where(Subscription.subscriber_id == scope.subscriber_id)
        if not everything:
            which = which.where(Subscription.cadence == scope.cadence)
            if scope.cadence != Cadence.INSTANT:
                which = which.where(Subscription.topic_id == scope.topic_id)
        conn.execute(which)
        left = conn.scalar(
            select(Subscription.id).where(Subscription.subscriber_id == scope.subscriber_id)
        )
        if left is None:
            conn.execute(
                update(Subscriber)
                .where(
                    Subscriber.id == scope.subscriber_id,
                    Subscriber.status.in_([SubscriberStatus.ACTIVE, SubscriberStatus.PENDING]),
                )
                .values(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=utcnow())
            )
    return True


# -- preferences -----------------------------------------------------------------------------


def read_preferences_token(tokens: Tokens, token: str) -> int:
    """The reader a preferences link was signed for; BadToken otherwise."""
    payload = tokens.verify(PREFERENCES, token)
    if not isinstance(payload, int) or isinstance(payload, bool):
        raise BadToken("malformed preferences token")
    return payload


@dataclass(frozen=True)
class TopicView:
    slug: str
    name: str
    description: str


@dataclass(frozen=True)
class Preferences:
    """What the preferences page shows; ``subscriptions`` holds (topic slug, cadence)."""

    subscriber_id: int
    email: str
    name: str
    status: str
    timezone: str
    paused_until: datetime | None
    subscriptions: frozenset[tuple[str, str]] = field(default_factory=frozenset)


def list_topics(engine: Engine) -> list[TopicView]:
    """The newsroom's topics in display order (the forms offer these)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Topic.slug, Topic.name, Topic.description).order_by(Topic.position, Topic.id)
        ).all()
    return [TopicView(r.slug, r.name, r.description) for r in rows]


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """Every IANA time-zone name this system knows."""
    return frozenset(available_timezones())


def get_preferences(
    engine: Engine, subscriber_id: int, now: datetime | None = None
) -> Preferences | None:
    """The reader's preferences, or None when they no longer exist (erased or forgotten)."""
    with engine.connect() as conn:
        reader = conn.execute(
            select(
                Subscriber.email,
                Subscriber.name,
                Subscriber.status,
                Subscriber.timezone,
                Subscriber.paused_until,
            ).where(Subscriber.id == subscriber_id)
        ).one_or_none()
        if reader is None or reader.email is None:
            return None
        rows = conn.execute(
            select(Topic.slug, Subscription.cadence)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == subscriber_id)
        ).all()
    paused = reader.paused_until
    if paused is not None and paused <= (now or utcnow()):
        paused = None  # a pause that has run out is no pause
    return Preferences(
        subscriber_id,
        reader.email,
        reader.name or "",
        reader.status,
        reader.timezone,
        paused,
        frozenset((r.slug, r.cadence) for r in rows),
    )


def check_choices(engine: Engine, choices: set[tuple[str, str]], timezone: str) -> None:
    """ValueError (in Arabic, for the page) for an unknown topic, cadence or time zone."""
    known = {t.slug for t in list_topics(engine)}
    for slug, cadence in choices:
        if slug not in known or cadence not in tuple(Cadence):
            raise ValueError("اختيار غير معروف في قائمة المواضيع.")
    if timezone not in time_zones():
        raise ValueError("المنطقة الزمنية غير معروفة.")


def update_preferences(
    engine: Engine,
    subscriber_id: int,
    *,
    name: str,
    choices: set[tuple[str, str]],
    timezone: str,
) -> bool:
    """Replace the reader's subscriptions, name and time zone; False if they do not exist.

    Choosing nothing unsubscribes an active reader. An unsubscribed reader who chooses
    topics again must confirm (:func:`mailer.signup.resubscribe`), so this never turns one
    back into an active reader. Raises ValueError for unknown choices.
    """
    check_choices(engine, choices, timezone)
    insert_ = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        status = conn.scalar(
            select(Subscriber.status).where(Subscriber.id == subscriber_id).with_for_update()
        )
        if status is None:
            return False
        topic_ids = dict(conn.execute(select(Topic.slug, Topic.id)).all())
        current = {
            (row.topic_id, row.cadence): row.id
            for row in conn.execute(
                select(Subscription.id, Subscription.topic_id, Subscription.cadence).where(
                    Subscription.subscriber_id == subscriber_id
                )
            )
        }
        wanted = {(topic_ids[slug], cadence) for slug, cadence in choices}
        gone = [sub_id for key, sub_id in current.items() if key not in wanted]
        if gone:
            conn.execute(delete(Subscription).where(Subscription.id.in_(gone)))
        new = [
            {"subscriber_id": subscriber_id, "topic_id": t, "cadence": c, "created_at": utcnow()}
            for t, c in wanted - set(current)
        ]
        if new:
            conn.execute(insert_(Subscription).on_conflict_do_nothing(), new)
        values: dict[str, Any] = {"name": clean_name(name), "timezone": timezone}
        if not wanted and status == SubscriberStatus.ACTIVE:
            values.update(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=utcnow())
        conn.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(**values))
    return True


def pause(engine: Engine, subscriber_id: int, days: int, now: datetime | None = None) -> bool:
    """Pause every email for ``days`` (1–90), or resume with 0; False if the reader is gone."""
    if not 0 <= days <= MAX_PAUSE_DAYS:
        raise ValueError(f"a pause lasts 0 to {MAX_PAUSE_DAYS} days")
    until = (now or utcnow()) + timedelta(days=days) if days else None
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Subscriber).where(Subscriber.id == subscriber_id).values(paused_until=until)
            ).rowcount
        )


# -- access and erasure ----------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_data(engine: Engine, subscriber_id: int) -> dict[str, Any] | None:
    """Everything kept about the reader, as JSON-ready data; None if they do not exist."""
    with engine.connect() as conn:
        reader = conn.execute(select(Subscriber).where(Subscriber.id == subscriber_id)).first()
        if reader is None or reader.email is None:
            return None
        subscriptions = conn.execute(
            select(Topic.slug, Topic.name, Subscription.cadence, Subscription.created_at)
            .join(Topic, Topic.id == Subscription.topic_id)
            .where(Subscription.subscriber_id == subscriber_id)
            .order_by(Topic.position, Subscription.cadence)
        ).all()
        deliveries = conn.execute(
            select(Delivery.edition_id, Edition.kind, Edition.subject, Delivery.status)
            .add_columns(Delivery.sent_at)
            .join(Edition, Edition.id == Delivery.edition_id)
            .where(Delivery.subscriber_id == subscriber_id)
            # Newest editions first, each probed in the (edition, reader) index: see deliveries_of.
            .order_by(Edition.id.desc())
            .limit(EXPORT_DELIVERIES)
        ).all()
        messages = conn.execute(
            select(TransactionalMessage.kind, TransactionalMessage.status)
            .add_columns(TransactionalMessage.created_at, TransactionalMessage.sent_at)
            .where(TransactionalMessage.subscriber_id == subscriber_id)
            .order_by(TransactionalMessage.id)
        ).all()
    return {
        "email": reader.email,
        "name": reader.name,
        "locale": reader.locale,
        "timezone": reader.timezone,
        "status": reader.status,
        "created_at": _iso(reader.created_at),
        "confirmed_at": _iso(reader.confirmed_at),
        "unsubscribed_at": _iso(reader.unsubscribed_at),
        "paused_until": _iso(reader.paused_until),
        "consent": {
            "at": _iso(reader.consent_at),
            "ip": reader.consent_ip,
            "user_agent": reader.consent_user_agent,
            "source": reader.consent_source,
        },
        "subscriptions": [
            {
                "topic": s.slug,
                "topic_name": s.name,
                "cadence": s.cadence,
                "since": _iso(s.created_at),
            }
            for s in subscriptions
        ],
        "emails": [
            {
                "edition": d.edition_id,
                "kind": d.kind,
                "subject": d.subject,
                "status": d.status,
                "sent_at": _iso(d.sent_at),
            }
            for d in deliveries
        ]
        + [{"kind": m.kind, "status": m.status, "sent_at": _iso(m.sent_at)} for m in messages],
    }


def deliveries_of(readers: int | Select[Any]) -> ColumnElement[bool]:
    """The deliveries of one reader (an id) or of several (a subquery of ids).

    ``deliveries`` has no index on the reader alone: it would cost every plan and every send a
    fifth more (migration 0005). Naming the editions lets the database probe the (edition,
    reader) unique index once per edition instead of scanning every delivery.
    """
    reader = Delivery.subscriber_id
    return and_(
        Delivery.edition_id.in_(select(Edition.id)),
        reader == readers if isinstance(readers, int) else reader.in_(readers),
    )


def erase(engine: Engine, subscriber_id: int) -> bool:
    """Forget the reader: delete them and every clear copy of their address; keep the keyed
    hash as an ``erased`` suppression. False if they did not exist."""
    insert_ = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        digest = conn.scalar(
            select(Subscriber.email_hash).where(Subscriber.id == subscriber_id).with_for_update()
        )
        if digest is None:
            return False
        conn.execute(
            insert_(Suppression)
            .values(
                email_hash=digest, email=None, reason=ERASED, source="reader", created_at=utcnow()
            )
            .on_conflict_do_nothing(index_elements=["email_hash"])
        )
        # A bounce or complaint suppression keeps its reason but loses the address.
        conn.execute(update(Suppression).where(Suppression.email_hash == digest).values(email=None))
        # Server replies often quote the address ("<amal@example.com>: user unknown").
        for table, theirs in (
            (Delivery, deliveries_of(subscriber_id)),
            (TransactionalMessage, TransactionalMessage.subscriber_id == subscriber_id),
        ):
            conn.execute(update(table).where(theirs).values(subscriber_id=None, last_response=None))
        conn.execute(delete(Subscriber).where(Subscriber.id == subscriber_id))
    return True
