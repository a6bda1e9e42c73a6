"""Fault scenarios on real worker processes: each builds its own stack, breaks something
mid-edition, lets the edition finish and returns its :class:`~tests.faults.audit.Figures`.

The tests in this folder run them in quick mode and assert on the figures;
``python -m benchmarks.reliability`` runs the same functions and prints them (``--full`` for
the issue's sizes). Only servers of the scenario's own are restarted or flushed (a private
``redis-server``, a private PostgreSQL cluster); the shared PostgreSQL only gets a fresh
database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.faults.audit import Figures, audit, delivery_rows, edition_status
from tests.support.faulty_smtp import (
    Fault,
    FaultySMTPServer,
    Injected,
    Once,
    Plan,
    combine,
    every_nth,
    for_recipients,
)
from tests.support.services import (
    PostgresCluster,
    RedisServer,
    fault_stack,
    group_holding,
    shared_pg_database,
)
from tests.support.stack import Stack

#: The run's size: quick (CI, the default) or full (MAILER_TEST_FULL=1, or ``--full``).
FULL = os.environ.get("MAILER_TEST_FULL", "") == "1"
SEED = int(os.environ.get("MAILER_FAULT_SEED", "20261125"))
SMTP_TIMEOUT = 2.0  # seconds per message (the SMTP URL's timeout=)
SLACK = 1.0  # a loaded machine's scheduling delay on top of a timeout


@dataclass(frozen=True)
class Sizes:
    kill_readers: int
    kills: int
    sigterm_readers: int
    redis_readers: int
    redis_restarts: int
    pg_readers: int
    pg_restarts: int
    smtp_readers: int
    race_readers: int


QUICK = Sizes(2_000, 5, 600, 1_000, 1, 1_000, 1, 200, 200)
FULL_SIZES = Sizes(10_000, 8, 5_000, 5_000, 2, 5_000, 3, 1_000, 2_000)


def sizes(full: bool) -> Sizes:
    return FULL_SIZES if full else QUICK


def reader(number: int) -> str:
    """The address :meth:`Stack.add_readers` gives reader ``number`` (from 1)."""
    return f"reader{number:06d}@example.com"


# -- shared steps ------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def accepted(smtp: FaultySMTPServer, count: int) -> Callable[[], bool]:
    """Whether the server has accepted ``count`` messages yet."""
    return lambda: smtp.accepted_count() >= count


def _finished(stack: Stack, edition_id: int) -> bool:
    try:
        return edition_status(stack.engine, edition_id) in ("sent", "failed")
    except Exception:  # the database is restarting: not yet
        return False


def conclude(
    stack: Stack, smtp: FaultySMTPServer, figures: Figures, edition_id: int, timeout: float
) -> Figures:
    """Wait for the edition to finish (a problem, not an exception, if it does not) and audit."""
    began = time.monotonic()
    if not wait_for(lambda: _finished(stack, edition_id), timeout):
        figures.problems.append(
            f"the edition did not finish within {timeout:g} s; worker logs:\n"
            + stack.worker_logs()[-3000:]
        )
    figures.seconds += time.monotonic() - began
    return audit(
        figures,
        delivery_rows(stack.engine, edition_id),
        smtp.received(),
        smtp.message_ids(),
        status=edition_status(stack.engine, edition_id),
    )


@contextlib.contextmanager
def pg_and_redis(
    tmp: Path, smtp: FaultySMTPServer, **overrides: object
) -> Iterator[tuple[Stack, RedisServer]]:
    """A stack on a fresh database of the shared PostgreSQL and a Redis of our own."""
    with (
        RedisServer(tmp / "redis") as broker,
        shared_pg_database() as url,
        fault_stack(tmp, smtp, database_url=url, broker_url=broker.url, **overrides) as stack,
    ):
        yield stack, broker


# -- workers killed ----------------------------------------------------------------------------


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    beat: bool
    started: float


def sigkill_workers(tmp: Path, full: bool = FULL, seed: int = SEED) -> Figures:
    """Two workers (concurrency 2, one running beat) send an alert; one of them has its whole
    process group SIGKILLed again and again, and a new one starts each time.

    Every other kill lands at the worst moment: the server has accepted a message and holds
    back its 250, and the worker sending it is found (by its socket) and killed then, so the
    reader has the message while its row still says "sending". The others land at seeded
    random moments while sending, on a worker past its start-up.
    """
    size = sizes(full)
    rng = random.Random(seed)
    worst = Once(Fault.ACCEPT_WITHOUT_REPLY)
    with FaultySMTPServer(worst, delay=0.004) as smtp, pg_and_redis(tmp, smtp) as (stack, _):
        concurrency = stack.settings.worker_concurrency
        figures = Figures(
            "SIGKILL worker process groups",
            "PostgreSQL + Redis",
            injected=0,
            expected=size.kill_readers,
            allowed=size.kills * concurrency,
        )
        stack.add_readers(size.kill_readers)
        story = stack.add_story()
        workers = [
            _Worker(stack.start_worker(beat=True), True, time.monotonic()),
            _Worker(stack.start_worker(beat=False), False, time.monotonic()),
        ]
        began = time.monotonic()
        started = stack.service.trigger_alert(story)
        low, high = size.kill_readers * 5 // 100, size.kill_readers * 80 // 100
        targets = sorted(rng.sample(range(low, high), size.kills))
        at_worst = 0
        for index, target in enumerate(targets):
            if not wait_for(accepted(smtp, target), 120):
                figures.problems.append(f"sending stalled before {target} messages")
                break
            if _finished(stack, started.edition_id):
                figures.problems.append("the edition finished before every kill; slow it down")
                break
            victim = _worst_moment(smtp, worst, workers) if index % 2 == 0 else None
            if victim is not None:
                at_worst += 1
            else:
                # A worker surely past its start-up, so that it is sending when it dies.
                ready = [w for w in workers if time.monotonic() - w.started > 4.0]
                if not ready:
                    time.sleep(4.0 - min(time.monotonic() - w.started for w in workers))
                    ready = workers
                time.sleep(rng.uniform(0.0, 0.3))
                victim = rng.choice(ready)
            stack.kill_worker(victim.proc, signal.SIGKILL)
            figures.injected += 1
            stack.workers.remove(victim.proc)
            workers.remove(victim)
            workers.append(
                _Worker(stack.start_worker(beat=victim.beat), victim.beat, time.monotonic())
            )
        sent_at_last_kill = smtp.accepted_count()
        smtp.delay = 0.0
        figures.seconds = time.monotonic() - began
        figures.measures["kills_at_the_worst_moment"] = at_worst
        figures.notes = (
            f"{figures.injected} kills x {concurrency} processes, {at_worst} of them with a "
            f"message accepted but not yet recorded; last kill after {sent_at_last_kill} messages"
        )
        conclude(stack, smtp, figures, started.edition_id, 120 if not full else 300)
        if figures.duplicated < at_worst:
            figures.problems.append(
                f"{at_worst} kills hit an accepted, unrecorded message but only "
                f"{figures.duplicated} copies went out twice: the kills missed their moment"
            )
        return figures


def _worst_moment(smtp: FaultySMTPServer, worst: Once, workers: list[_Worker]) -> _Worker | None:
    """Arm the server to accept the next message without answering; return the worker whose
    process holds that connection (None if it cannot be told in time)."""
    with contextlib.suppress(queue.Empty):
        while True:  # a connection left over from a missed moment is not this one
            smtp.unanswered.get_nowait()
    worst.arm()
    try:
        client_port = smtp.unanswered.get(timeout=30)
    except queue.Empty:
        return None
    group = group_holding(client_port, smtp.port, [w.proc.pid for w in workers])
    return next((w for w in workers if w.proc.pid == group), None)


def sigterm_worker(tmp: Path, full: bool = FULL) -> Figures:
    """A deploy: SIGTERM to the worker's main process (warm shutdown), a new one takes over."""
    size = sizes(full)
    with FaultySMTPServer(delay=0.004) as smtp, pg_and_redis(tmp, smtp) as (stack, _):
        figures = Figures(
            "SIGTERM worker (deploy)",
            "PostgreSQL + Redis",
            injected=0,
            expected=size.sigterm_readers,
            allowed=0,
        )
        stack.add_readers(size.sigterm_readers)
        worker = stack.start_worker()
        began = time.monotonic()
        started = stack.service.trigger_alert(stack.add_story())
        if wait_for(accepted(smtp, size.sigterm_readers // 5), 60):
            worker.send_signal(signal.SIGTERM)  # the main process only, as `docker stop` does
            figures.injected += 1
            worker.wait(60)
            stack.workers.remove(worker)
            if smtp.accepted_count() >= size.sigterm_readers:
                figures.problems.append("the edition finished before the deploy; slow it down")
        else:
            figures.problems.append("sending never started")
        smtp.delay = 0.0
        stack.start_worker()
        figures.seconds = time.monotonic() - began
        figures.notes = "warm shutdown finishes the running batch; a new worker takes the rest"
        return conclude(stack, smtp, figures, started.edition_id, 120 if not full else 300)


# -- servers restarted -------------------------------------------------------------------------


def _digest(stack: Stack, readers: int) -> int:
    stack.add_readers(readers, topics=("syria",), cadence="daily")
    stack.add_story("حصاد اليوم", topic="syria", breaking=False)
    return stack.service.send_digest("syria", "daily").edition_id


def redis_restart(tmp: Path, full: bool = FULL) -> Figures:
    """The broker crashes, flushed, and comes back empty mid-digest: every queued and
    unacknowledged wake-up is gone, kombu's bindings too."""
    size = sizes(full)
    with FaultySMTPServer(delay=0.004) as smtp, pg_and_redis(tmp, smtp) as (stack, broker):
        figures = Figures(
            "Redis crashed, flushed, restarted",
            "PostgreSQL + Redis",
            injected=0,
            expected=size.redis_readers,
            allowed=0,
        )
        stack.start_worker()
        began = time.monotonic()
        edition_id = _digest(stack, size.redis_readers)
        for number in range(1, size.redis_restarts + 1):
            mark = size.redis_readers * number // (size.redis_restarts + 2)
            if not wait_for(accepted(smtp, mark), 90):
                figures.problems.append(f"sending stalled before {mark} messages")
                break
            broker.restart(down_seconds=1.0)
            figures.injected += 1
            if _finished(stack, edition_id):
                figures.problems.append("the edition finished before the restart; slow it down")
        smtp.delay = 0.0
        figures.seconds = time.monotonic() - began
        figures.notes = "down 1 s each time; the sweeper re-dispatches from the database"
        return conclude(stack, smtp, figures, edition_id, 120 if not full else 300)


def postgres_restart(tmp: Path, full: bool = FULL) -> Figures:
    """PostgreSQL (a cluster of the scenario's own) restarts mid-digest: every worker's
    connection is cut, in the middle of claims and of per-message commits."""
    size = sizes(full)
    with (
        FaultySMTPServer(delay=0.004) as smtp,
        RedisServer(tmp / "redis") as broker,
        PostgresCluster() as cluster,
        fault_stack(
            tmp, smtp, database_url=cluster.create_database(), broker_url=broker.url
        ) as stack,
    ):
        concurrency = stack.settings.worker_concurrency
        figures = Figures(
            "PostgreSQL restarted",
            "PostgreSQL + Redis",
            injected=0,
            expected=size.pg_readers,
            # A message the server accepted whose commit the restart cut off is sent again:
            # at most one per sending process per restart, as for a kill.
            allowed=size.pg_restarts * concurrency,
        )
        stack.start_worker()
        began = time.monotonic()
        edition_id = _digest(stack, size.pg_readers)
        for number in range(1, size.pg_restarts + 1):
            mark = size.pg_readers * number // (size.pg_restarts + 2)
            if not wait_for(accepted(smtp, mark), 90):
                figures.problems.append(f"sending stalled before {mark} messages")
                break
            cluster.restart(down_seconds=1.0)
            figures.injected += 1
            if _finished(stack, edition_id):
                figures.problems.append("the edition finished before the restart; slow it down")
        smtp.delay = 0.0
        figures.seconds = time.monotonic() - began
        figures.notes = f"pg_ctl restart -m fast, down 1 s; {concurrency} sending processes"
        return conclude(stack, smtp, figures, edition_id, 150 if not full else 300)


# -- SMTP faults -------------------------------------------------------------------------------

#: Per fault: how often it hits a first attempt (every n-th message), and whether one reader
#: meets it on every attempt (and so must end failed, with the reason).
SMTP_FAULTS: dict[Fault, tuple[int, bool]] = {
    Fault.HANG_AFTER_DATA: (40, True),
    Fault.RESET_MID_DATA: (15, True),
    Fault.SLOW_REPLY: (25, False),
    # Each 421 halves the server's sending rate (mailer.throttle): a few are enough.
    Fault.REPLY_421_CLOSE: (60, True),
}
#: What the failed reader's recorded reason must say.
REASONS: dict[Fault, str] = {
    Fault.HANG_AFTER_DATA: "timed out",
    Fault.RESET_MID_DATA: "connection",
    Fault.REPLY_421_CLOSE: "shutting down",
}
DOOMED = reader(7)


def smtp_fault(tmp: Path, fault: Fault, full: bool = FULL) -> Figures:
    """An alert through a server that plays ``fault`` on every n-th message (first attempts)
    and, except for the slow reply, on every attempt for one reader."""
    size = sizes(full)
    every, doomed = SMTP_FAULTS[fault]
    plan: Plan = every_nth(every, fault)
    if doomed:
        plan = combine(for_recipients([DOOMED], fault), plan)
    slow = SMTP_TIMEOUT * 0.75  # just under the per-message timeout
    with (
        FaultySMTPServer(plan, slow_seconds=slow) as smtp,
        pg_and_redis(tmp, smtp, max_attempts=3) as (stack, _),
    ):
        figures = Figures(
            f"SMTP: {fault}", "PostgreSQL + Redis", injected=0, expected=size.smtp_readers
        )
        stack.add_readers(size.smtp_readers)
        stack.start_worker()
        began = time.monotonic()
        started = stack.service.trigger_alert(stack.add_story())
        timeout = 120 if not full else 300
        conclude(stack, smtp, figures, started.edition_id, timeout)
        figures.seconds = time.monotonic() - began
        faults = smtp.faults()
        figures.injected = len(faults)
        _check_smtp_fault(figures, fault, doomed, faults, stack, started.edition_id, smtp)
        return figures


def _check_smtp_fault(
    figures: Figures,
    fault: Fault,
    doomed: bool,
    faults: list[Injected],
    stack: Stack,
    edition_id: int,
    smtp: FaultySMTPServer,
) -> None:
    problems = figures.problems
    if not faults:
        problems.append("no fault was injected")
        return
    # No worker stuck: each faulted message was let go of within the timeout.
    held = [f.held for f in faults]
    if any(h is None for h in held):
        problems.append(f"{held.count(None)} faulted messages never let go by the client")
    longest = max((h for h in held if h is not None), default=0.0)
    if longest > SMTP_TIMEOUT + SLACK:
        problems.append(f"a client held a faulted message {longest:.1f} s (timeout {SMTP_TIMEOUT})")
    figures.measures["longest_held_s"] = longest
    figures.notes = f"longest held {longest:.2f} s against a {SMTP_TIMEOUT:g} s timeout"
    rows = {row.email: row for row in delivery_rows(stack.engine, edition_id)}
    if doomed:
        row = rows[DOOMED]
        if row.status != "failed" or REASONS[fault] not in (row.last_response or ""):
            problems.append(
                f"{DOOMED} (faulted on every attempt) ended {row.status!r}: {row.last_response!r}"
            )
        if fault is Fault.REPLY_421_CLOSE and row.last_code != 421:
            problems.append(f"{DOOMED}'s last code is {row.last_code}, not 421")
    if fault is Fault.SLOW_REPLY:
        with smtp.lock:
            accepted = {a.number for a in smtp.accepted}
        refused = [f.number for f in faults if f.number not in accepted]
        if refused:
            problems.append(f"{len(refused)} slow replies were given up on before the timeout")
        retried = [email for email, row in rows.items() if row.attempts != 1]
        if retried:
            problems.append(f"{len(retried)} readers needed a retry: {retried[:5]}")


def smtp_faults(tmp: Path, full: bool = FULL) -> list[Figures]:
    return [smtp_fault(tmp / fault.name.lower(), fault, full) for fault in SMTP_FAULTS]
