"""Double opt-in: subscribe from the web form, confirm from the emailed link.

No enumeration: whatever the address's state (new, pending, active, unsubscribed),
:func:`subscribe` hashes it, runs the same two queries (locking the reader's row), writes
about as much and queues one email in the same transaction, and the page shown is the same.
Each state's outcome is visible only in the address's own mailbox:

- new → a pending reader with their choices and consent record, and a confirmation email;
- pending → their choices replaced, the confirmation sent again (the address rate limit in
  the web layer bounds how often);
- unsubscribed → pending again with a fresh consent record and a fresh confirmation (older
  confirm links stop working: each is bound to the consent time);
- active → an "already subscribed" email with their preferences link, nothing changed;
- suppressed (bounced, complained, blocked) → nothing. An ``erased`` suppression is the
  exception: a reader who asked to be forgotten may subscribe again, and their confirmation
  lifts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailer import transactional, transactional_mail
from mailer.addresses import InvalidAddress, address_hash, clean_name, normalise
from mailer.config import Settings
from mailer.dispatch import ALERTS_QUEUE
from mailer.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)
from mailer.readers import ERASED
from mailer.tokens import CONFIRM, BadToken, Tokens

Clock = transactional.Clock


class InvalidRequest(ValueError):
    """A form value that cannot be accepted; ``field`` names it, the message is Arabic."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Consent:
    """Who asked, from where: recorded with the subscription (GDPR art. 7(1))."""

    ip: str | None
    user_agent: str | None
    source: str = "web"


@dataclass(frozen=True)
class SubscribeRequest:
    email: str
    name: str
    topics: tuple[str, ...]
    cadence: str
    consent: Consent


@dataclass(frozen=True)
class Subscribed:
    """What happened (for logs and tests only, never shown) and the message to dispatch."""

    outcome: str
    message_id: int | None
    queue: str = ALERTS_QUEUE


def check_request(request: SubscribeRequest) -> tuple[str, str, bool]:
    """(normalised address, its hash key, needs SMTPUTF8), or InvalidRequest. The topics are
    checked against the database in the subscribing transaction itself."""
    try:
        address = normalise(request.email)
    except InvalidAddress:
        raise InvalidRequest(
            "email", "عنوان البريد الإلكتروني غير صالح. تحقق منه وأعد المحاولة."
        ) from None
    if request.cadence not in tuple(Cadence):
        raise InvalidRequest("cadence", "اختر موعد وصول الرسائل.")
    if not request.topics:
        raise InvalidRequest("topics", "اختر موضوعاً واحداً على الأقل.")
    return address.email, address.key, address.needs_smtputf8


# Built once: constructing a statement costs more CPU than running it (~100 µs each), and the
# form is the busiest public endpoint.
_TOPICS = select(Topic.id, Topic.slug).where(Topic.slug.in_(bindparam("slugs", expanding=True)))
_SUPPRESSION = select(Suppression.reason).where(Suppression.email_hash == bindparam("digest"))
_READER = (
    select(Subscriber.id, Subscriber.status)
    .where(Subscriber.email_hash == bindparam("digest"))
    .with_for_update()
)
_NEW_READER = insert(Subscriber).returning(Subscriber.id)
_FORGET_CHOICES = delete(Subscription).where(Subscription.subscriber_id == bindparam("reader"))


def subscribe(
    engine: Engine,
    settings: Settings,
    request: SubscribeRequest,
    *,
    allow: Callable[[str], bool] | None = None,
    now: Clock = utcnow,
) -> Subscribed:
    """Record a subscription request (see the module docstring); raises InvalidRequest.

    ``allow`` is asked with the address's keyed hash (the per-address rate limit); when it
    says no, nothing is recorded or sent. Dispatch ``message_id`` on ``queue`` after this
    returns (it has committed).
    """
    email, key, smtputf8 = check_request(request)
    digest = address_hash(key, settings.hash_key)
    if allow is not None and not allow(digest):
        return Subscribed("limited", None)
    try:
        return _subscribe(engine, request, email, digest, smtputf8, now)
    except IntegrityError:  # a concurrent request inserted the same new address: it is pending
        _TOPIC_IDS.pop(engine, None)  # or a topic was removed by hand: look them up again
        return _subscribe(engine, request, email, digest, smtputf8, now)


# Topics are added, never deleted or renamed by the service: ids found once are kept (per
# database), saving a round trip on every sign-up. A slug not known yet is looked up.
_TOPIC_IDS: WeakKeyDictionary[Engine, dict[str, int]] = WeakKeyDictionary()


def _topic_ids(engine: Engine, conn: Connection, slugs: tuple[str, ...]) -> dict[int, str]:
    """The chosen topics as id → slug; a slug that is no topic is left out."""
    known = _TOPIC_IDS.setdefault(engine, {})
    if not all(slug in known for slug in slugs):
        for topic_id, slug in conn.execute(_TOPICS, {"slugs": list(slugs)}):
            known[slug] = topic_id
    return {known[slug]: slug for slug in slugs if slug in known}


def _subscribe(
    engine: Engine,
    request: SubscribeRequest,
    email: str,
    digest: str,
    smtputf8: bool,
    now: Clock,
) -> Subscribed:
    moment = now()
    consent = _consent_record(request.consent, moment)
    name = clean_name(request.name)
    with engine.begin() as conn:
        topic_ids = _topic_ids(engine, conn, request.topics)
        if set(topic_ids.values()) != set(request.topics):
            raise InvalidRequest("topics", "اختيار غير معروف في قائمة المواضيع.")
        # The same two queries whatever the address's state (no timing difference to read).
        reason = conn.scalar(_SUPPRESSION, {"digest": digest})
        found = conn.execute(_READER, {"digest": digest}).one_or_none()
        if reason is not None and reason != ERASED:
            return Subscribed("suppressed", None)
        if found is None:
            subscriber_id = conn.execute(
                _NEW_READER,
                {
                    "email": email,
                    "email_hash": digest,
                    "name": name,
                    "status": SubscriberStatus.PENDING,
                    "needs_smtputf8": smtputf8,
                    "created_at": moment,
                    "updated_at": moment,
                    **consent,
                },
            ).scalar_one()
            outcome, kind = "new", transactional.CONFIRMATION
        elif found.status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
            return Subscribed(str(found.status), None)
        elif found.status == SubscriberStatus.ACTIVE:
            subscriber_id, outcome, kind = found.id, "active", transactional.ALREADY_SUBSCRIBED
        else:
            subscriber_id, outcome = found.id, str(found.status)
            kind = transactional.CONFIRMATION
            values: dict[str, Any] = {"status": SubscriberStatus.PENDING}
            if name:
                values["name"] = name
            if found.status == SubscriberStatus.UNSUBSCRIBED:
                values.update(consent)  # a fresh request: older confirm links stop working
            conn.execute(update(Subscriber).where(Subscriber.id == found.id).values(**values))
            conn.execute(_FORGET_CHOICES, {"reader": subscriber_id})
        if kind == transactional.CONFIRMATION:
            _choose(conn, subscriber_id, list(topic_ids), request.cadence, moment)
        message_id = transactional.enqueue(
            conn, kind, subscriber_id, queue=ALERTS_QUEUE, now=lambda: moment
        )
    return Subscribed(outcome, message_id)


def _consent_record(consent: Consent, moment: datetime) -> dict[str, Any]:
    """The subscriber columns that record who asked, when and from where."""
    return {
        "consent_at": moment,
        "consent_ip": (consent.ip or "")[:64] or None,
        "consent_user_agent": (consent.user_agent or "")[:400] or None,
        "consent_source": consent.source[:64],
    }


def _choose(
    conn: Connection, subscriber_id: int, topic_ids: list[int], cadence: str, moment: datetime
) -> None:
    """A not-yet-active reader's subscriptions: the form's choice (older ones are deleted)."""
    conn.execute(
        insert(Subscription),
        [
            {
                "subscriber_id": subscriber_id,
                "topic_id": t,
                "cadence": cadence,
                "created_at": moment,
            }
            for t in topic_ids
        ],
    )


def resubscribe(
    engine: Engine,
    subscriber_id: int,
    choices: set[tuple[str, str]],
    consent: Consent,
    *,
    now: Clock = utcnow,
) -> int | None:
    """An unsubscribed reader chose topics on their preferences page: pending again with those
    choices and a fresh confirmation (returned, to dispatch on the priority queue); None if
    the reader is not unsubscribed (or gone)."""
    moment = now()
    with engine.begin() as conn:
        updated = conn.execute(
            update(Subscriber)
            .where(
                Subscriber.id == subscriber_id,
                Subscriber.status == SubscriberStatus.UNSUBSCRIBED,
            )
            .values(status=SubscriberStatus.PENDING, **_consent_record(consent, moment))
        ).rowcount
        if not updated:
            return None
        topic_ids = dict(conn.execute(select(Topic.slug, Topic.id)).all())
        conn.execute(_FORGET_CHOICES, {"reader": subscriber_id})
        conn.execute(
            insert(Subscription),
            [
                {"subscriber_id": subscriber_id, "topic_id": topic_ids[s], "cadence": c}
                | {"created_at": moment}
                for s, c in choices
            ],
        )
        return transactional.enqueue(
            conn, transactional.CONFIRMATION, subscriber_id, queue=ALERTS_QUEUE, now=lambda: moment
        )


# -- confirmation ----------------------------------------------------------------------------


class ConfirmState(StrEnum):
    READY = "ready"  # pending, and this is its current link: the button will confirm
    CONFIRMED = "confirmed"  # just confirmed by this request
    ALREADY = "already"  # already active: nothing to do
    STALE = "stale"  # a newer request replaced this link, or the reader left since
    GONE = "gone"  # the reader was forgotten or erased


def read_confirm_token(settings: Settings, tokens: Tokens, token: str) -> tuple[int, int]:
    """(subscriber id, consent stamp); BadToken, or ExpiredToken after confirm_max_age_days."""
    payload = tokens.verify_timed(CONFIRM, token, settings.confirm_max_age_days * 86400)
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in payload)
    ):
        raise BadToken("malformed confirm token")
    return payload[0], payload[1]


def _state(status: str | None, consent_at: datetime | None, stamp: int) -> ConfirmState:
    if status is None:
        return ConfirmState.GONE
    if status == SubscriberStatus.ACTIVE:
        return ConfirmState.ALREADY
    if status == SubscriberStatus.PENDING and transactional_mail.confirm_stamp(consent_at) == stamp:
        return ConfirmState.READY
    return ConfirmState.STALE


def confirm_state(engine: Engine, subscriber_id: int, stamp: int) -> ConfirmState:
    """What the confirm button would do (the GET page; changes nothing)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Subscriber.status, Subscriber.consent_at).where(Subscriber.id == subscriber_id)
        ).one_or_none()
    if row is None:
        return ConfirmState.GONE
    return _state(row.status, row.consent_at, stamp)


def confirm(
    engine: Engine,
    subscriber_id: int,
    stamp: int,
    consent: Consent,
    *,
    now: Clock = utcnow,
) -> tuple[ConfirmState, int | None]:
    """Confirm a pending reader; (state, welcome message id to dispatch on the priority
    queue). Works once: any later use answers ALREADY and changes nothing."""
    moment = now()
    with engine.begin() as conn:
        row = conn.execute(
            select(Subscriber.status, Subscriber.consent_at, Subscriber.email_hash)
            .where(Subscriber.id == subscriber_id)
            .with_for_update()
        ).one_or_none()
        state = _state(row.status if row else None, row.consent_at if row else None, stamp)
        if state != ConfirmState.READY or row is None:
            return state, None
        values: dict[str, Any] = {
            "status": SubscriberStatus.ACTIVE,
            "confirmed_at": moment,
            "unsubscribed_at": None,
        }
        if row.consent_at is None:  # imported without consent: the click is the consent
            values.update(
                consent_at=moment,
                consent_ip=(consent.ip or "")[:64] or None,
                consent_user_agent=(consent.user_agent or "")[:400] or None,
            )
        conn.execute(update(Subscriber).where(Subscriber.id == subscriber_id).values(**values))
        conn.execute(
            delete(Suppression).where(
                Suppression.email_hash == row.email_hash, Suppression.reason == ERASED
            )
        )
        welcome = transactional.enqueue(
            conn, transactional.WELCOME, subscriber_id, queue=ALERTS_QUEUE, now=lambda: moment
        )
    return ConfirmState.CONFIRMED, welcome
