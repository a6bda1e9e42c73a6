"""The sweeper: the database, not the broker, decides what still has to be sent.

Run periodically by beat (and safe to run from any number of processes at once). It
- takes back rows whose lease expired (a worker was killed mid-batch),
- queues deferred rows whose retry time has come,
- re-dispatches an edition's queued rows when no batch was claimed for ``stall_seconds``
  (the broker lost, dropped or was flushed of its messages), and
- rolls up editions with no open deliveries.
A duplicated wake-up is harmless: claiming is atomic, so the second batch finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, exists, select, update
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.dispatch import Batch, Dispatcher
from mailer.editions import batches, finish_if_done, queue_for
from mailer.models import Delivery, DeliveryStatus, Edition, EditionKind, EditionStatus, utcnow


@dataclass
class SweepReport:
    reclaimed: int = 0
    retried: int = 0
    redispatched: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)


def batch_size(settings: Settings, kind: str) -> int:
    return settings.alert_batch_size if kind == EditionKind.ALERT else settings.digest_batch_size


def pending_batches(session: Session, edition: Edition, settings: Settings) -> list[Batch]:
    """Keyset batches covering every queued row of the edition."""
    return batches(session, edition.id, batch_size(settings, edition.kind))


def sweep(
    engine: Engine,
    settings: Settings,
    dispatcher: Dispatcher,
    now: Callable[[], datetime] = utcnow,
) -> SweepReport:
    report = SweepReport()
    moment = now()
    touched: set[int] = set()
    with engine.begin() as conn:
        reclaimed = (
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.lease_expires_at < moment,
                )
                .values(status=DeliveryStatus.QUEUED, lease_owner=None, lease_expires_at=None)
                .returning(Delivery.edition_id)
            )
            .scalars()
            .all()
        )
        retried = (
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.status == DeliveryStatus.DEFERRED,
                    Delivery.next_attempt_at <= moment,
                )
                .values(status=DeliveryStatus.QUEUED)
                .returning(Delivery.edition_id)
            )
            .scalars()
            .all()
        )
        # Rows given back after their edition was cancelled (a lease that expired, a release
        # racing the cancel) are cancelled too, so the edition's counts stay exact.
        conn.execute(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.edition_id.in_(
                    select(Edition.id).where(Edition.status == EditionStatus.CANCELLED)
                ),
            )
            .values(status=DeliveryStatus.CANCELLED)
        )
    report.reclaimed, report.retried = len(reclaimed), len(retried)
    touched.update(reclaimed, retried)

    stall_before = moment - timedelta(seconds=settings.stall_seconds)
    with Session(engine) as session, session.begin():
        has_queued = exists().where(
            Delivery.edition_id == Edition.id, Delivery.status == DeliveryStatus.QUEUED
        )
        stalled = session.scalars(
            select(Edition.id).where(
                Edition.status == EditionStatus.SENDING,
                has_queued,
                (Edition.progress_at.is_(None)) | (Edition.progress_at < stall_before),
            )
        ).all()
        touched.update(stalled)
    for edition_id in sorted(touched):
        with Session(engine) as session, session.begin():
            edition = session.get(Edition, edition_id)
            if edition is None or edition.status != EditionStatus.SENDING:
                continue
            edition.progress_at = moment  # give the new wake-ups time before the next stall
            found, queue = pending_batches(session, edition, settings), queue_for(edition)
        if found:  # enqueue after the commit
            dispatcher.dispatch(queue, found)
            report.redispatched.append(edition_id)

    with Session(engine) as session:
        sending = session.scalars(
            select(Edition.id).where(Edition.status == EditionStatus.SENDING)
        ).all()
    for edition_id in sending:
        with Session(engine) as session, session.begin():
            if finish_if_done(session, edition_id, now):
                report.finished.append(edition_id)
    return report
