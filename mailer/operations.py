"""Operator tools around editions: preview, test sends, resending failures (and pruning).

Preview and test sends build the message with the real sender's own personalisation
(:class:`mailer.sending.EditionSender`) through a transport that only captures the bytes, so
what an operator looks at is byte for byte what the reader gets (the Date aside). Test sends
create no deliveries: they go to seed addresses, carry their own Message-ID, and are recorded
in the audit log instead.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import Any, NamedTuple, cast

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from mailer import audit
from mailer.addresses import normalise
from mailer.config import Settings
from mailer.dispatch import Dispatcher
from mailer.editions import EditionError, queue_for, story_view, topic_ids_for
from mailer.message import MessageSpec
from mailer.models import (
    Cadence,
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Story,
    Subscriber,
    utcnow,
)
from mailer.pruning import FINISHED, prune_deliveries
from mailer.rendering import Renderer
from mailer.sending import Claimed, EditionSender, PreparedEdition
from mailer.suppress import hash_for
from mailer.sweeper import pending_batches
from mailer.transport import Outcome, SendResult, Transport

__all__ = [
    "NotFound",
    "Preview",
    "TestResult",
    "preview",
    "prune_deliveries",  # lives in mailer.pruning
    "resend_failed",
    "test_send",
    "test_send_alert",
]

TEST_SUBJECT_PREFIX = "[تجربة] "


class NotFound(LookupError):
    """The edition, story or reader asked about does not exist."""


class Preview(NamedTuple):
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class TestResult:
    address: str
    outcome: str
    code: int | None
    text: str


class _Capture:
    """A :class:`Transport` that sends nothing: previews and tests only use the sender to build
    messages (:meth:`EditionSender.message_for`); it answers the 8BITMIME question."""

    def __init__(self, eightbitmime: bool = True) -> None:
        self._eightbitmime = eightbitmime
        self.sender = ""
        self.data = b""

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        self.sender, self.data = sender, data
        return SendResult(Outcome.SENT, 250, "captured", None)

    @property
    def eightbitmime(self) -> bool:
        return self._eightbitmime

    def close(self) -> None:
        return None


def _build(sender: EditionSender, prepared: PreparedEdition, reader: Claimed) -> bytes:
    """The reader's message exactly as a worker would send it."""
    return sender.message_for(prepared, reader)[1]


def _reader(delivery_id: int, subscriber: Subscriber | None, address: str) -> Claimed:
    return Claimed(
        delivery_id=delivery_id,
        subscriber_id=subscriber.id if subscriber else 0,
        email=address,
        name=subscriber.name if subscriber else "",
        needs_smtputf8=not address.split("@", 1)[0].isascii(),
        attempts=1,
        created_at=utcnow(),
    )


def _find_reader(session: Session, settings: Settings, address: str) -> Subscriber | None:
    return session.scalar(
        select(Subscriber).where(Subscriber.email_hash == hash_for(address, settings))
    )


def preview(engine: Engine, settings: Settings, edition_id: int, reader_email: str) -> Preview:
    """What ``reader_email`` gets from this edition: their greeting, their own links."""
    address = normalise(reader_email).email
    with Session(engine) as session:
        reader = _find_reader(session, settings, address)
        if reader is None or reader.email is None:
            raise NotFound(f"no reader with address {reader_email!r}")
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.edition_id == edition_id, Delivery.subscriber_id == reader.id
            )
        )
        claimed = _reader(delivery_id or 0, reader, reader.email)
    sender = EditionSender(settings, engine, _Capture())
    prepared = sender.prepare(edition_id)
    if prepared is None:
        raise NotFound(f"no edition with id {edition_id}")
    message = email.message_from_bytes(
        _build(sender, prepared, claimed), policy=email.policy.default
    )
    assert isinstance(message, EmailMessage)
    return Preview(str(message["Subject"]), _body(message, "html"), _body(message, "plain"))


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    return str(part.get_content()) if part is not None else ""


def _send_tests(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    prepared: PreparedEdition,
    addresses: Sequence[str],
) -> list[TestResult]:
    """Send the prepared message to each seed address; no delivery row is involved."""
    checked = [normalise(a).email for a in addresses]  # refuse bad input before sending any
    if not checked:
        raise ValueError("give at least one address to send the test to")
    # Marked in the subject, so nobody forwards a test as the real alert.
    prepared = replace(
        prepared,
        spec=replace(prepared.spec, subject=TEST_SUBJECT_PREFIX + prepared.spec.subject),
        templates={},
    )
    sender = EditionSender(settings, engine, _Capture(transport.eightbitmime))
    shared_id = sender.tokens.message_id(prepared.edition_id, 0)
    results = []
    with Session(engine) as session:
        readers = {a: _find_reader(session, settings, a) for a in checked}
    for address in checked:
        # Links point at no reader (id 0): clicking "unsubscribe" in a test changes nothing.
        reader = replace(_reader(0, None, address), name=getattr(readers[address], "name", ""))
        envelope, data = sender.message_for(prepared, reader)
        # A Message-ID of its own, so a second test (or the real send) is not de-duplicated.
        own_id = f"<test.{prepared.edition_id}.{uuid.uuid4().hex}@{settings.sender_domain}>"
        data = data.replace(shared_id.encode(), own_id.encode(), 1)
        sent = transport.send(envelope, address, data, smtputf8=reader.needs_smtputf8)
        results.append(TestResult(address, sent.outcome.value, sent.code, sent.text))
    return results


def _audit_tests(engine: Engine, actor: str, target: str, results: list[TestResult]) -> None:
    details = {"to": [r.__dict__ for r in results]}
    with engine.begin() as conn:
        audit.record(conn, actor, "test_send", target, details)


def test_send(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    edition_id: int,
    addresses: Sequence[str],
    actor: str,
) -> list[TestResult]:
    """Send this edition to seed addresses (real messages, no deliveries), audited."""
    prepared = EditionSender(settings, engine, _Capture()).prepare(edition_id)
    if prepared is None:
        raise NotFound(f"no edition with id {edition_id}")
    results = _send_tests(engine, settings, transport, prepared, addresses)
    _audit_tests(engine, actor, f"edition:{edition_id}", results)
    return results


def test_send_alert(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    renderer: Renderer,
    story_id: int,
    addresses: Sequence[str],
    actor: str,
) -> list[TestResult]:
    """A story's alert to seed addresses before the alert exists (so nothing is planned)."""
    with Session(engine) as session:
        story = session.get(Story, story_id)
        if story is None:
            raise NotFound(f"no story with id {story_id}")
        rendered = renderer.render_alert(story_view(story), topic_name=story.topic.name)
        draft = Edition(kind=EditionKind.ALERT, topic_id=story.topic_id)
        topic_ids = topic_ids_for(session, draft)
    # Mirrors EditionSender.prepare, which only reads editions that exist.
    spec = MessageSpec(
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        sender=settings.sender,
        reply_to=settings.reply_to or None,
        list_id=settings.list_id,
        kind=EditionKind.ALERT,
        feedback_id=f"0:{EditionKind.ALERT}:{settings.feedback_id_sender}",
    )
    prepared = PreparedEdition(
        0, EditionKind.ALERT, story.topic_id, topic_ids, Cadence.INSTANT, spec
    )
    results = _send_tests(engine, settings, transport, prepared, addresses)
    _audit_tests(engine, actor, f"story:{story_id}", results)
    return results


def _row_count(session: Session, edition_id: int) -> int:
    count = select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition_id)
    return int(session.scalar(count) or 0)


def resend_failed(
    engine: Engine, settings: Settings, dispatcher: Dispatcher, edition_id: int, actor: str
) -> int:
    """Queue the edition's failed (not bounced) deliveries again; returns how many.

    Their retry budget (attempts and age) starts afresh: the operator asked for a new try. A
    finished edition goes back to sending; batches are dispatched after the commit.
    """
    with Session(engine) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise NotFound(f"no edition with id {edition_id}")
        if edition.status not in (
            EditionStatus.SENDING,
            EditionStatus.PAUSED,
            EditionStatus.SENT,
            EditionStatus.FAILED,
        ):
            raise EditionError(f"edition {edition_id} is {edition.status}: nothing to resend")
        if edition.status in FINISHED and _row_count(session, edition_id) < edition.total_count:
            raise EditionError(f"edition {edition_id}'s deliveries were pruned")
        moment = utcnow()
        result = cast(
            CursorResult[Any],
            session.execute(
                update(Delivery)
                .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.FAILED)
                .values(
                    status=DeliveryStatus.QUEUED,
                    attempts=0,
                    created_at=moment,
                    next_attempt_at=moment,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ),
        )
        count = int(result.rowcount)
        if count and edition.status in FINISHED:
            edition.status, edition.finished_at = EditionStatus.SENDING, None
            edition.status_reason = f"resending {count} failed recipients"
        if count and edition.status == EditionStatus.SENDING:
            edition.progress_at = moment
        found = pending_batches(session, edition, settings) if count else []
        queue = queue_for(edition)
        sending = edition.status == EditionStatus.SENDING
        audit.record(
            session, actor, "edition.resend_failed", f"edition:{edition_id}", {"requeued": count}
        )
        session.commit()
    if sending and found:  # a paused edition is woken by its resume
        dispatcher.dispatch(queue, found)
    return count
