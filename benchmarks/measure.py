"""Run one edition on fresh Celery workers and measure it from the outside.

Fresh worker processes per measurement, so that ``VmHWM`` (peak RSS) belongs to this edition
alone; CPU is read from ``/proc`` for the worker trees (main process and pool children) before
and after. The clock stops when the sink has every message *and* the edition is rolled up as
sent, i.e. every delivery is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks.env import BenchEnv
from benchmarks.procs import CpuMeter, backends, tree_cpu, worker_peak_rss
from mailer.models import Delivery, DeliveryStatus, Edition


@dataclass(frozen=True)
class Sent:
    edition_id: int
    messages: int
    seconds: float
    cpu: float  # worker CPU seconds
    peak_rss_mib: float
    signed: int
    duplicates: int
    db_cpu: float  # PostgreSQL backends of this database
    sink_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        return self.per_message(self.cpu)

    def per_message(self, seconds: float) -> float:
        """Milliseconds per message."""
        return seconds * 1000 / self.messages if self.messages else 0.0

    @property
    def others(self) -> str:
        """Where else the CPU went, for the figure column."""
        return (
            f"PostgreSQL {self.per_message(self.db_cpu):.2f} + sink "
            f"{self.per_message(self.sink_cpu):.2f} ms/msg"
        )


def edition_status(env: BenchEnv, edition_id: int) -> str:
    with Session(env.engine) as session:
        return session.scalar(select(Edition.status).where(Edition.id == edition_id)) or ""


def describe(env: BenchEnv, edition_id: int) -> str:
    """The edition's status and its deliveries by status, for an error message."""
    with Session(env.engine) as session:
        counts = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.edition_id == edition_id)
            .group_by(Delivery.status)
        ).all()
    found = ", ".join(f"{status} {n}" for status, n in counts)
    return f"edition {edition_status(env, edition_id)}, deliveries: {found}"


def recorded(env: BenchEnv, edition_id: int) -> int:
    """Deliveries of the edition recorded as sent."""
    with Session(env.engine) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.edition_id == edition_id, Delivery.status == DeliveryStatus.SENT)
            )
            or 0
        )


def wait_delivered(
    env: BenchEnv, edition_id: int, expected: int, *, whole: bool = True, stall: float = 60
) -> None:
    """Until the sink has ``expected`` messages of the edition and they are recorded: the
    edition rolled up as sent (``whole``), or that many deliveries marked sent.

    Fails when the count stops moving for ``stall`` seconds (with the workers' logs).
    """
    count, moved = -1, time.monotonic()
    while True:
        now = env.sink.key(edition_id).count
        if now >= expected:
            break
        if now != count:
            count, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise RuntimeError(
                f"edition {edition_id}: {now} of {expected} messages, no progress for "
                f"{stall:.0f}s; {describe(env, edition_id)}\n{env.worker_logs()}"
            )
        time.sleep(0.05)
    deadline = time.monotonic() + stall
    while (
        edition_status(env, edition_id) != "sent" if whole else recorded(env, edition_id) < expected
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"edition {edition_id} delivered but not finished after {stall}s")
        time.sleep(0.02)


def send_on_fresh_workers(
    env: BenchEnv,
    start: Callable[[], tuple[int, int]],
    *,
    concurrency: int,
    extra: dict[str, Any] | None = None,
    whole: bool = True,
) -> Sent:
    """Start digest workers, call ``start`` (returns edition id and the readers it set going),
    wait for them (``whole``: for the edition to finish).

    The clock and the CPU count start just before ``start``, so planning and rendering are in.
    """
    worker = env.start_worker("digests", concurrency, extra=extra)
    try:
        env.sink.reset()
        database = env.settings.database.rsplit("/", 1)[1]
        db, sink = CpuMeter(lambda: backends(database)), CpuMeter(lambda: [env.sink_proc.pid])
        cpu0, t0 = tree_cpu([worker.pid]), time.monotonic()
        edition_id, planned = start()
        wait_delivered(env, edition_id, planned, whole=whole)
        seconds = time.monotonic() - t0
        cpu = tree_cpu([worker.pid]) - cpu0
        db_cpu, sink_cpu = db.used(), sink.used()
        rss = worker_peak_rss([worker.pid])
        stats = env.sink.key(edition_id)
        duplicates = env.sink.stats()["duplicates"]
        assert isinstance(duplicates, int)
    finally:
        env.stop_workers()
    return Sent(edition_id, planned, seconds, cpu, rss, stats.signed, duplicates, db_cpu, sink_cpu)
