"""Pruning old deliveries without losing any edition's counts (DESIGN.md §3).

``deliveries`` is the table that grows (readers × editions). Once an edition is finished its
rows only serve reporting, so after a retention period they are deleted — after the edition's
counts were rolled up from them, which is what progress, stats and metrics read from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from mailer.models import OPEN_DELIVERY, Delivery, DeliveryStatus, Edition, EditionStatus, utcnow

#: Editions whose deliveries may be pruned: nothing about them will change again.
FINISHED = (EditionStatus.SENT, EditionStatus.FAILED, EditionStatus.CANCELLED)
PRUNE_CHUNK = 5000


def prune_deliveries(
    engine: Engine,
    older_than: timedelta,
    now: datetime | None = None,
    *,
    chunk: int = PRUNE_CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete the delivery rows of editions finished before ``now - older_than``.

    Each edition's counts are rolled up from its rows first, so they survive; rows are then
    deleted in chunks (short transactions that never hold SQLite's one writer for long).
    Editions with a row still open (a message in flight) are left for a later run.
    """
    cutoff = (now or utcnow()) - older_than
    with Session(engine) as session:
        candidates = list(
            session.scalars(
                select(Edition.id)
                .where(
                    Edition.status.in_(FINISHED),
                    Edition.finished_at < cutoff,
                    select(Delivery.id).where(Delivery.edition_id == Edition.id).exists(),
                )
                .order_by(Edition.id)
            )
        )
    removed = 0
    for edition_id in candidates:
        if not _roll_up(engine, edition_id):
            continue
        while True:
            with engine.begin() as conn:
                ids = select(Delivery.id).where(Delivery.edition_id == edition_id).limit(chunk)
                gone = int(conn.execute(delete(Delivery).where(Delivery.id.in_(ids))).rowcount)
            removed += gone
            if progress is not None and gone:
                progress(gone)
            if gone < chunk:
                break
    return removed


def _roll_up(engine: Engine, edition_id: int) -> bool:
    """Write the edition's counts from its rows; False if a row is still open."""
    with Session(engine) as session, session.begin():
        edition = session.get(Edition, edition_id)
        assert edition is not None
        counts: dict[str, int] = {
            str(status): int(n)
            for status, n in session.execute(
                select(Delivery.status, func.count())
                .where(Delivery.edition_id == edition_id)
                .group_by(Delivery.status)
            )
        }
        if any(counts.get(status, 0) for status in OPEN_DELIVERY):
            return False
        # Rows are only ever removed here, so fewer rows than the total means an earlier run
        # was interrupted after rolling up: its counts are the right ones, keep them.
        if sum(counts.values()) == edition.total_count:
            edition.sent_count = counts.get(DeliveryStatus.SENT, 0)
            edition.failed_count = counts.get(DeliveryStatus.FAILED, 0)
            edition.bounced_count = counts.get(DeliveryStatus.BOUNCED, 0)
            edition.suppressed_count = counts.get(DeliveryStatus.SUPPRESSED, 0)
            edition.cancelled_count = counts.get(DeliveryStatus.CANCELLED, 0)
    return True
