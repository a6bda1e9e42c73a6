"""What a reader does from a link in an email: unsubscribe (RFC 8058 one-click or the button).

An email's unsubscribe link ends the subscription that email was sent for: alerts (every
instant subscription) or that topic's digest at that cadence. "Everything" ends them all.
Repeating either changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update

from mailer.models import Cadence, Subscriber, SubscriberStatus, Subscription, Topic, utcnow
from mailer.tokens import UNSUBSCRIBE, BadToken, Tokens


@dataclass(frozen=True)
class Scope:
    subscriber_id: int
    topic_id: int
    cadence: str


def read_unsubscribe_token(tokens: Tokens, token: str) -> Scope:
    """The scope a link was signed for; BadToken when tampered with or not an unsubscribe link."""
    payload = tokens.verify(UNSUBSCRIBE, token)
    if (
        not isinstance(payload, list)
        or len(payload) != 3
        or not all(isinstance(v, int) for v in payload[:2])
        or payload[2] not in tuple(Cadence)
    ):
        raise BadToken("malformed unsubscribe token")
    return Scope(payload[0], payload[1], payload[2])


def describe(engine: Engine, scope: Scope) -> str:
    """What the link unsubscribes from, in Arabic, for the page."""
    if scope.cadence == Cadence.INSTANT:
        return "التنبيهات العاجلة"
    with engine.connect() as conn:
        name = conn.scalar(select(Topic.name).where(Topic.id == scope.topic_id)) or ""
    period = "اليومية" if scope.cadence == Cadence.DAILY else "الأسبوعية"
    return f"النشرة {period}: {name}"


def unsubscribe(engine: Engine, scope: Scope, *, everything: bool = False) -> bool:
    """End the scoped subscription (or all); returns whether the reader still exists."""
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
                    Subscriber.status == SubscriberStatus.ACTIVE,
                )
                .values(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=utcnow())
            )
    return True
