"""Scenarios 5 and 6: planning a million readers, then sending that edition for the memory row.

Planning is ``Service.send_digest`` with a :class:`MemoryDispatcher` (render, one
``INSERT … SELECT`` of eligible readers, keyset batches, commit), timed on its own. The
batches it would have queued are then handed to fresh Celery workers, so the same edition
measures the workers' peak RSS at that size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks.env import BenchEnv
from benchmarks.measure import send_on_fresh_workers
from benchmarks.report import Row
from benchmarks.scenarios.digest import prepare
from mailer import editions
from mailer.dispatch import Batch, MemoryDispatcher
from mailer.models import Delivery
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher

SLUG = "bench-plan"


@dataclass(frozen=True)
class Planned:
    edition_id: int
    readers: int
    batches: list[tuple[str, Batch]]


def run_planning(env: BenchEnv, readers: int) -> tuple[list[Row], Planned]:
    prepare(env, SLUG, readers, cadence="weekly")
    dispatcher = MemoryDispatcher()
    service = env.service(dispatcher)
    t0 = time.perf_counter()
    started = service.send_digest(SLUG, "weekly")
    seconds = time.perf_counter() - t0
    with Session(env.engine) as session:  # the keyset split alone, measured again
        t1 = time.perf_counter()
        editions.batches(session, started.edition_id, env.settings.digest_batch_size)
        split = time.perf_counter() - t1
    planned = Planned(started.edition_id, started.planned, dispatcher.sent)
    row = Row(
        "planning",
        section="planning",
        readers=started.planned,
        figure=(
            f"{seconds:.2f} s ({started.planned / seconds:,.0f} readers/s; "
            f"batch split {split:.2f} s)"
        ),
        target="1M readers < 10 s",
        ok=seconds < 10 if started.planned >= 1_000_000 else None,
        values={"seconds": seconds, "split_seconds": split},
    )
    return [row], planned


def run_memory(
    env: BenchEnv, planned: Planned, concurrency: int, messages: int, baseline_rss: float | None
) -> list[Row]:
    """Send the planned edition's first ``messages`` readers (all: ``messages`` ≥ readers).

    A worker holds one batch at a time whatever the edition's size, so a slice of the big
    edition shows its memory; the rest is cancelled afterwards.
    """
    dispatcher = CeleryDispatcher(make_celery(env.settings))
    size = env.settings.digest_batch_size
    chosen = planned.batches[: -(-messages // size)]
    with Session(env.engine) as session:
        count = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.edition_id == planned.edition_id, Delivery.id <= chosen[-1][1].last_id)
        )
    expected = int(count or 0)

    def start() -> tuple[int, int]:
        for queue, batch in chosen:
            dispatcher.dispatch(queue, [batch])
        return planned.edition_id, expected

    whole = len(chosen) == len(planned.batches)
    sent = send_on_fresh_workers(env, start, concurrency=concurrency, whole=whole)
    if not whole:
        env.service().cancel(planned.edition_id)
    flat = "" if baseline_rss is None else f"; the digest row's peaked at {baseline_rss:.0f} MiB"
    part = "" if whole else f"first {expected:,} of "
    return [
        Row(
            f"memory: {part}the planned {planned.readers:,}-reader edition",
            section="planning",
            readers=sent.messages,
            messages_per_s=sent.rate,
            cpu_ms_per_message=sent.cpu_ms_per_message,
            peak_rss_mib=sent.peak_rss_mib,
            figure=f"{sent.seconds:.0f} s, {sent.duplicates} duplicates; {sent.others}{flat}",
            target="RSS flat, < 150 MiB",
            ok=sent.peak_rss_mib < 150 and sent.duplicates == 0,
            values={"seconds": sent.seconds},
        )
    ]
