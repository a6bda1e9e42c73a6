"""What a bounce or complaint report changes in the database (:func:`apply`).

Parsing is :mod:`mailer.bounces`; the intakes are :mod:`mailer.inbound`. A report changes:

* hard bounce: the delivery becomes ``bounced``, the reader ``bounced``, the address suppressed;
* soft bounce: the reader's score goes up by one, at most once a day, and starts again from
  zero when the last counted bounce is older than ``soft_bounce_expiry_days`` (Mailman's
  bounce score, where a day with bounces counts once); at ``soft_bounce_threshold`` the address
  is suppressed. So with the defaults, a mailbox full on five days within a week is suppressed,
  and five breaking-news alerts bouncing off it in one afternoon are not;
* complaint: every subscription ends, the reader is ``complained``, the address suppressed;
* auto-replies and anything else: nothing.

Which reader a report is about comes from our VERP address (its HMAC is checked: a forged or
unknown token changes nothing). Without VERP only hard bounces and complaints are applied, to
the reader whose address the report names: feedback loops and some broken servers reply to
the From address, and a soft bounce is not worth acting on without proof it is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from mailer.bounces import BounceReport
from mailer.config import Settings
from mailer.models import (
    Delivery,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    Subscription,
    utcnow,
)
from mailer.suppress import hash_for, suppress_address
from mailer.tokens import Tokens

log = logging.getLogger(__name__)

#: The kinds that change something, by severity (the worst of several reports wins).
SEVERITY = {"complaint": 3, "hard": 2, "soft": 1}


@dataclass
class Applied:
    """What one report changed: ``suppressed``, ``scored``, ``unsubscribed`` or ``ignored:…``."""

    report: BounceReport
    delivery_id: int | None
    action: str


def apply(
    engine: Engine,
    settings: Settings,
    report: BounceReport,
    *,
    now: Callable[[], datetime] = utcnow,
) -> Applied:
    """Apply one parsed report (see the module docstring for what each kind does)."""
    if report.kind not in SEVERITY:
        return Applied(report, None, f"ignored:{report.kind}")
    with engine.begin() as conn:
        delivery_id, subscriber_id, why = _find_reader(conn, settings, report)
        if subscriber_id is None:
            return Applied(report, delivery_id, f"ignored:{why}")
        reader = conn.execute(
            select(
                Subscriber.email,
                Subscriber.status,
                Subscriber.bounce_score,
                Subscriber.bounce_score_at,
            ).where(Subscriber.id == subscriber_id)
        ).one()
        source = f"{report.status or ''} {report.reason}".strip()[:200]
        if report.kind == "complaint":
            conn.execute(delete(Subscription).where(Subscription.subscriber_id == subscriber_id))
            _set_status(conn, subscriber_id, SubscriberStatus.COMPLAINED, unsubscribed_at=now())
            _suppress(conn, settings, reader.email, "complaint", source)
            action = "unsubscribed"
        elif report.kind == "hard":
            if delivery_id is not None:
                conn.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id)
                    .values(status=DeliveryStatus.BOUNCED, last_response=source[:1000])
                )
            _bounced(
                conn, settings, subscriber_id, reader.status, reader.email, "hard_bounce", source
            )
            action = "suppressed"
        else:
            moment = now()
            last = reader.bounce_score_at
            if last is not None and moment - last < timedelta(days=1):
                return Applied(report, delivery_id, "ignored:already scored today")
            expired = last is None or moment - last > timedelta(
                days=settings.soft_bounce_expiry_days
            )
            score = (0.0 if expired else reader.bounce_score) + 1.0
            conn.execute(
                update(Subscriber)
                .where(Subscriber.id == subscriber_id)
                .values(bounce_score=score, bounce_score_at=moment)
            )
            action = "scored"
            if score >= settings.soft_bounce_threshold:
                _bounced(
                    conn,
                    settings,
                    subscriber_id,
                    reader.status,
                    reader.email,
                    "soft_bounce",
                    f"score {score:g}: {source}",
                )
                action = "suppressed"
    log.info("inbound %s %s (delivery %s): %s", report.kind, report.recipient, delivery_id, action)
    return Applied(report, delivery_id, action)


def _find_reader(
    conn: Connection, settings: Settings, report: BounceReport
) -> tuple[int | None, int | None, str]:
    """(delivery id, subscriber id, why not found) for a report."""
    delivery_id = None
    if report.verp:
        delivery_id = Tokens(settings).parse_verp(report.verp)
        if delivery_id is None:
            return None, None, "forged or unknown VERP token"
        found = conn.execute(
            select(Delivery.subscriber_id).where(Delivery.id == delivery_id)
        ).first()
        if found is not None:
            if found.subscriber_id is None:
                return delivery_id, None, "reader no longer exists"
            return delivery_id, found.subscriber_id, ""
        # A genuine token whose delivery was pruned: fall back to the address, as below.
    if report.kind == "soft":
        return delivery_id, None, "soft bounce without our VERP address"
    if not report.recipient:
        return delivery_id, None, "no recipient"
    try:
        key = hash_for(report.recipient, settings)
    except ValueError:
        return delivery_id, None, "recipient is not a valid address"
    subscriber_id = conn.scalar(select(Subscriber.id).where(Subscriber.email_hash == key))
    return delivery_id, subscriber_id, "" if subscriber_id else "unknown recipient"


def _set_status(conn: Connection, subscriber_id: int, status: str, **values: Any) -> None:
    conn.execute(
        update(Subscriber).where(Subscriber.id == subscriber_id).values(status=status, **values)
    )


def _suppress(
    conn: Connection, settings: Settings, email: str | None, reason: str, source: str
) -> None:
    if email:  # an erased reader has no address left; their hash is suppressed already
        suppress_address(conn, email, reason, source, settings)


def _bounced(
    conn: Connection,
    settings: Settings,
    subscriber_id: int,
    status: str,
    email: str | None,
    reason: str,
    source: str,
) -> None:
    if status != SubscriberStatus.COMPLAINED:  # a complaint says more than a bounce
        _set_status(conn, subscriber_id, SubscriberStatus.BOUNCED)
    _suppress(conn, settings, email, reason, source)
