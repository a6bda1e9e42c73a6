"""Transactional messages: confirmation (double opt-in), welcome, and "already subscribed".

Each is one ``transactional_messages`` row with its own deterministic Message-ID, sent through
the same transport, retry and suppression rules as an edition (DESIGN.md §6), and mirrored on
:mod:`mailer.sending`: claim the row with a lease (a conditional UPDATE, so a replayed or
duplicated wake-up sends nothing), build and personalise, send, record the result at once.

How each message looks is :mod:`mailer.transactional_mail` (every kind inlined once per
process; per message only the reader's values are filled in).

Queues: self-service messages go on the priority queue ("alerts"); confirmations caused by a
bulk import on the bulk queue ("digests"). Enqueue inside the caller's transaction, dispatch
(``dispatcher.dispatch_messages(queue, ids)``) after it commits; the sweeper covers lost
wake-ups. A queued row's ``next_attempt_at`` is when it was last woken.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update

from mailer import transactional_mail as mail
from mailer.config import Settings
from mailer.dispatch import Dispatcher
from mailer.dkim import DkimSigner
from mailer.models import (
    Delivery,
    MessageStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
    TransactionalMessage,
    utcnow,
)
from mailer.readers import ERASED, deliveries_of
from mailer.rendering import Renderer
from mailer.suppress import suppress_address
from mailer.transport import Outcome, SendResult, Transport

log = logging.getLogger(__name__)

CONFIRMATION = "confirmation"
WELCOME = "welcome"
ALREADY_SUBSCRIBED = "already_subscribed"
#: The reader status each kind is for; sent to anyone else it would be wrong or unwanted.
KINDS = {
    CONFIRMATION: SubscriberStatus.PENDING,
    WELCOME: SubscriberStatus.ACTIVE,
    ALREADY_SUBSCRIBED: SubscriberStatus.ACTIVE,
}
#: Rows re-dispatched per sweep at most, so a backlog cannot flood the broker with wake-ups.
REDISPATCH_LIMIT = 1000

Clock = Callable[[], datetime]


# Built once (every sign-up runs it): building costs more CPU than executing.
_ENQUEUE = insert(TransactionalMessage).returning(TransactionalMessage.id)


def enqueue(
    conn: Connection,
    kind: str,
    subscriber_id: int,
    *,
    queue: str,
    payload: dict[str, Any] | None = None,
    now: Clock = utcnow,
) -> int:
    """Insert a queued message and return its id; dispatch it after the caller commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown transactional message kind {kind!r}")
    moment = now()
    message_id = conn.execute(
        _ENQUEUE,
        {
            "kind": kind,
            "subscriber_id": subscriber_id,
            "queue": queue,
            "payload": payload or {},
            "status": MessageStatus.QUEUED,
            "next_attempt_at": moment,
            "created_at": moment,
        },
    ).scalar_one()
    return int(message_id)


def enqueue_many(
    conn: Connection, kind: str, subscriber_ids: Iterable[int], *, queue: str, now: Clock = utcnow
) -> list[int]:
    """:func:`enqueue` for many readers in one statement (an import's chunk)."""
    moment = now()
    rows = [
        {
            "kind": kind,
            "subscriber_id": subscriber_id,
            "queue": queue,
            "payload": {},
            "status": MessageStatus.QUEUED,
            "next_attempt_at": moment,
            "created_at": moment,
        }
        for subscriber_id in subscriber_ids
    ]
    if not rows:
        return []
    inserted = conn.execute(insert(TransactionalMessage).returning(TransactionalMessage.id), rows)
    return [int(i) for i in inserted.scalars()]


# -- claim, send, record ---------------------------------------------------------------------


def send_message(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    message_id: int,
    *,
    renderer: Renderer | None = None,
    signer: DkimSigner | None = None,
    now: Clock = utcnow,
) -> str | None:
    """Claim, send and record one message; its new status, or None if it was not queued
    (already sent, being sent, or a replayed wake-up): it is never sent twice. ``signer``
    DKIM-signs it, as every edition message is."""
    owner = uuid.uuid4().hex
    moment = now()
    with engine.begin() as conn:
        claimed = conn.execute(
            update(TransactionalMessage)
            .where(
                TransactionalMessage.id == message_id,
                TransactionalMessage.status == MessageStatus.QUEUED,
            )
            .values(
                status=MessageStatus.SENDING,
                lease_owner=owner,
                lease_expires_at=moment + timedelta(seconds=settings.lease_seconds),
                attempts=TransactionalMessage.attempts + 1,
            )
            .returning(
                TransactionalMessage.kind,
                TransactionalMessage.subscriber_id,
                TransactionalMessage.attempts,
                TransactionalMessage.created_at,
            )
        ).one_or_none()
        if claimed is None:
            return None
        reader = conn.execute(
            select(
                Subscriber.email,
                Subscriber.name,
                Subscriber.status,
                Subscriber.needs_smtputf8,
                Subscriber.consent_at,
                Suppression.reason,
            )
            .outerjoin(Suppression, Suppression.email_hash == Subscriber.email_hash)
            .where(Subscriber.id == claimed.subscriber_id)
        ).one_or_none()
    skip = _why_not(claimed.kind, reader)
    if skip:
        return _record(engine, settings, message_id, owner, now, failed=skip)
    assert reader is not None and claimed.subscriber_id is not None
    sid = int(claimed.subscriber_id)
    try:
        data = mail.build(
            settings,
            renderer or mail.default_renderer(settings),
            claimed.kind,
            message_id,
            mail.Reader(sid, reader.email, reader.name or "", reader.consent_at),
            moment,
            eightbit=transport.eightbitmime,
        )
    except ValueError as exc:  # a value no retry can fix (a header with a control character)
        return _record(engine, settings, message_id, owner, now, failed=f"cannot build: {exc}")
    except Exception:
        _release(engine, message_id, owner)
        raise
    if signer is not None:
        data = signer.sign(data)
    result = transport.send(
        mail.verp_address(settings, message_id), reader.email, data, smtputf8=reader.needs_smtputf8
    )
    return _record(
        engine,
        settings,
        message_id,
        owner,
        now,
        result=result,
        attempts=claimed.attempts,
        created_at=claimed.created_at,
        email=reader.email,
        subscriber_id=sid,
    )


def _why_not(kind: str, reader: Any) -> str:
    """Why this message must not go out now ("" when it may)."""
    if reader is None or reader.email is None:
        return "skipped: the reader no longer exists"
    if kind not in KINDS or reader.status != KINDS[kind]:
        return f"skipped: the reader is {reader.status}, not {KINDS.get(kind, '?')}"
    # An erased reader who subscribes again must be able to confirm; nobody else suppressed
    # gets anything.
    if reader.reason is not None and not (kind == CONFIRMATION and reader.reason == ERASED):
        return f"skipped: the address is suppressed ({reader.reason})"
    return ""


def _record(
    engine: Engine,
    settings: Settings,
    message_id: int,
    owner: str,
    now: Clock,
    *,
    failed: str = "",
    result: SendResult | None = None,
    attempts: int = 0,
    created_at: datetime | None = None,
    email: str = "",
    subscriber_id: int = 0,
) -> str:
    moment = now()
    values: dict[str, object] = {"lease_owner": None, "lease_expires_at": None}
    if result is None:
        values.update(status=MessageStatus.FAILED, last_response=failed[:1000])
    else:
        values.update(last_code=result.code, last_response=result.text[:1000])
        if result.outcome == Outcome.SENT:
            values.update(
                status=MessageStatus.SENT,
                sent_at=moment,
                message_id=mail.message_id_for(settings, message_id),
            )
        elif result.outcome == Outcome.TEMPORARY:
            age = (moment - (created_at or moment)).total_seconds()
            if attempts >= settings.max_attempts or age > settings.max_age_seconds:
                values.update(
                    status=MessageStatus.FAILED,
                    last_response=f"gave up after {attempts} attempts: {result.text}"[:1000],
                )
            else:
                delay = min(
                    settings.retry_max_seconds,
                    settings.retry_base_seconds
                    * 2 ** max(attempts - 1, 0)
                    * (0.5 + random.random()),
                )
                values.update(
                    status=MessageStatus.DEFERRED, next_attempt_at=moment + timedelta(seconds=delay)
                )
        else:
            values.update(status=MessageStatus.FAILED)
    with engine.begin() as conn:
        updated = conn.execute(
            update(TransactionalMessage)
            .where(TransactionalMessage.id == message_id, TransactionalMessage.lease_owner == owner)
            .values(**values)
        ).rowcount
        if result is not None and result.outcome == Outcome.HARD_BOUNCE:
            suppress_address(conn, email, "hard_bounce", result.text[:200], settings)
            conn.execute(
                update(Subscriber)
                .where(Subscriber.id == subscriber_id)
                .values(status=SubscriberStatus.BOUNCED)
            )
    if not updated:
        log.warning("transactional message %s was reclaimed while being sent", message_id)
    return str(values["status"])


def _release(engine: Engine, message_id: int, owner: str) -> None:
    """Give a claimed message back after an unexpected error (not counted as an attempt)."""
    with engine.begin() as conn:
        conn.execute(
            update(TransactionalMessage)
            .where(
                TransactionalMessage.id == message_id,
                TransactionalMessage.lease_owner == owner,
                TransactionalMessage.status == MessageStatus.SENDING,
            )
            .values(
                status=MessageStatus.QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                next_attempt_at=None,
                attempts=TransactionalMessage.attempts - 1,
            )
        )


# -- housekeeping (beat) ---------------------------------------------------------------------


def sweep(engine: Engine, settings: Settings, dispatcher: Dispatcher, now: Clock = utcnow) -> int:
    """Take back expired leases, queue due retries, and wake workers for queued messages
    nobody woke (or whose wake-up was lost) in ``stall_seconds``; returns how many."""
    moment = now()
    table = TransactionalMessage
    with engine.begin() as conn:
        idle = {"status": MessageStatus.QUEUED, "lease_owner": None, "lease_expires_at": None}
        conn.execute(
            update(table)
            .where(table.status == MessageStatus.SENDING, table.lease_expires_at < moment)
            .values(next_attempt_at=None, **idle)
        )
        conn.execute(
            update(table)
            .where(table.status == MessageStatus.DEFERRED, table.next_attempt_at <= moment)
            .values(next_attempt_at=None, **idle)
        )
        due = and_(
            table.status == MessageStatus.QUEUED,
            or_(
                table.next_attempt_at.is_(None),
                table.next_attempt_at <= moment - timedelta(seconds=settings.stall_seconds),
            ),
        )
        oldest = (
            select(table.id)
            .where(due)
            .order_by(table.id)
            .limit(REDISPATCH_LIMIT)
            .with_for_update(skip_locked=True)
        )
        # ``due`` again in the outer WHERE: a concurrent sweeper's rows are skipped, not re-woken.
        woken = conn.execute(
            update(table)
            .where(table.id.in_(oldest), due)
            .values(next_attempt_at=moment)
            .returning(table.id, table.queue)
        ).all()
    by_queue: dict[str, list[int]] = {}
    for row in sorted(woken):
        by_queue.setdefault(row.queue, []).append(row.id)
    for queue, ids in by_queue.items():
        dispatcher.dispatch_messages(queue, ids)
    return len(woken)


def forget_unconfirmed(engine: Engine, settings: Settings, now: Clock = utcnow) -> int:
    """Delete readers who never confirmed, ``forget_unconfirmed_days`` after their last
    request (their subscriptions cascade; their messages keep no address)."""
    cutoff = now() - timedelta(days=settings.forget_unconfirmed_days)
    forgotten = select(Subscriber.id).where(
        Subscriber.status == SubscriberStatus.PENDING,
        Subscriber.confirmed_at.is_(None),
        Subscriber.updated_at < cutoff,
    )
    with engine.begin() as conn:
        # Never confirmed, so never sent an edition; but deliveries have no foreign key to
        # clear it (migration 0004), so make sure none points at a deleted reader.
        conn.execute(update(Delivery).where(deliveries_of(forgotten)).values(subscriber_id=None))
        return int(conn.execute(delete(Subscriber).where(Subscriber.id.in_(forgotten))).rowcount)
