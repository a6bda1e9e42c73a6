"""Prometheus metrics, read from the database at scrape time (the database is the record).

``deliveries`` grows to billions of rows, so a scrape never scans it whole:

* finished editions (sent, failed, or cancelled and pruned) contribute the counts rolled up on
  their ``editions`` row — one small GROUP BY over editions;
* running editions (planned, sending, paused, or cancelled with rows left) contribute one
  GROUP BY over their deliveries, which the ``(edition_id, status, id)`` index serves;
* the send rate and SMTP reply codes look only at editions that are running or finished within
  the last hour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from mailer.dispatch import ALERTS_QUEUE, DIGESTS_QUEUE
from mailer.models import Delivery, DeliveryStatus, Edition, EditionKind, EditionStatus, utcnow

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
RUNNING: Final = (EditionStatus.PLANNED, EditionStatus.SENDING, EditionStatus.PAUSED)
RECENT: Final = timedelta(hours=1)
_ROLLED_UP: Final = {
    DeliveryStatus.SENT: Edition.sent_count,
    DeliveryStatus.FAILED: Edition.failed_count,
    DeliveryStatus.BOUNCED: Edition.bounced_count,
    DeliveryStatus.SUPPRESSED: Edition.suppressed_count,
    DeliveryStatus.CANCELLED: Edition.cancelled_count,
}


def _queue(kind: str) -> str:
    return ALERTS_QUEUE if kind == EditionKind.ALERT else DIGESTS_QUEUE


class MailerCollector(Collector):
    """Collects every ``mailer_*`` metric with a handful of queries per scrape."""

    def __init__(self, engine: Engine, now: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.now = now

    def collect(self) -> Iterator[Metric]:
        moment = self.now()
        has_rows = select(Delivery.id).where(Delivery.edition_id == Edition.id).exists()
        live_edition = or_(
            Edition.status.in_(RUNNING),
            and_(Edition.status == EditionStatus.CANCELLED, has_rows),
        )
        recent_edition = or_(Edition.status.in_(RUNNING), Edition.finished_at >= moment - RECENT)
        with Session(self.engine) as session:
            live = session.execute(
                select(Edition.kind, Edition.status, Delivery.status, func.count())
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(Edition.status.in_([*RUNNING, EditionStatus.CANCELLED]))
                .group_by(Edition.kind, Edition.status, Delivery.status)
            ).all()
            editions = session.execute(
                select(
                    Edition.kind,
                    Edition.status,
                    live_edition.label("live"),
                    func.count(),
                    *(func.coalesce(func.sum(column), 0) for column in _ROLLED_UP.values()),
                ).group_by(Edition.kind, Edition.status, "live")
            ).all()
            sent_recently = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(
                    recent_edition,
                    Delivery.status == DeliveryStatus.SENT,
                    Delivery.sent_at >= moment - timedelta(minutes=1),
                )
            )
            codes = session.execute(
                select(Delivery.last_code, func.count())
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(recent_edition, Delivery.last_code.is_not(None))
                .group_by(Delivery.last_code)
            ).all()

        messages = GaugeMetricFamily(
            "mailer_deliveries",
            "Messages by delivery status and edition kind (finished editions: rolled-up counts)",
            labels=["status", "kind"],
        )
        totals: dict[tuple[str, str], int] = {}
        queued = {ALERTS_QUEUE: 0, DIGESTS_QUEUE: 0}
        deferred = {ALERTS_QUEUE: 0, DIGESTS_QUEUE: 0}
        for kind, edition_status, status, count in live:
            key = (str(status), str(kind))
            totals[key] = totals.get(key, 0) + int(count)
            if status == DeliveryStatus.QUEUED and edition_status == EditionStatus.SENDING:
                queued[_queue(kind)] += int(count)
            if status == DeliveryStatus.DEFERRED:
                deferred[_queue(kind)] += int(count)
        by_status = GaugeMetricFamily(
            "mailer_editions", "Editions by kind and status", labels=["kind", "status"]
        )
        for kind, edition_status, is_live, count, *rolled in editions:
            by_status.add_metric([str(kind), str(edition_status)], int(count))
            if is_live:
                continue  # counted from its rows above
            for status, value in zip(_ROLLED_UP, rolled, strict=True):
                key = (status.value, str(kind))
                totals[key] = totals.get(key, 0) + int(value)
        for (status, kind), value in sorted(totals.items()):
            messages.add_metric([status, kind], value)
        yield messages
        yield by_status

        depth = GaugeMetricFamily(
            "mailer_queued_deliveries",
            "Messages waiting to be sent in sending editions (queue depth)",
            labels=["queue"],
        )
        backlog = GaugeMetricFamily(
            "mailer_deferred_backlog", "Messages waiting for a retry", labels=["queue"]
        )
        for queue in (ALERTS_QUEUE, DIGESTS_QUEUE):
            depth.add_metric([queue], queued[queue])
            backlog.add_metric([queue], deferred[queue])
        yield depth
        yield backlog
        yield GaugeMetricFamily(
            "mailer_sent_last_minute",
            "Messages accepted by the SMTP server in the last 60 seconds (the send rate)",
            value=int(sent_recently or 0),
        )
        replies = GaugeMetricFamily(
            "mailer_smtp_replies",
            "Last SMTP reply code of each message of editions running or finished in the last hour",
            labels=["code"],
        )
        for code, count in sorted(codes):
            replies.add_metric([str(code)], int(count))
        yield replies


def make_registry(engine: Engine, now: Callable[[], datetime] = utcnow) -> CollectorRegistry:
    """A registry of its own per app, so tests and several apps never share collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(engine, now))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
