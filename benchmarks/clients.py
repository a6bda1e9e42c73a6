"""Client processes that start together: for the sink ceiling and the naive baseline.

Each client is a fresh (spawned) process that sets itself up, waits at a barrier so that no
start-up cost is timed, runs its share, and reports its own wall clock span, CPU time and peak
RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from benchmarks.procs import peak_rss_mib

Work = Callable[[int, Any], Callable[[], int]]  # (index, args) -> a run() returning messages


@dataclass(frozen=True)
class ClientResult:
    messages: int
    start: float
    end: float
    cpu: float
    peak_rss_mib: float


@dataclass(frozen=True)
class Combined:
    messages: int
    seconds: float
    cpu: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def _client(work: Work, index: int, args: Any, barrier: Barrier, out: Any) -> None:
    try:
        run = work(index, args)  # set-up: connections, renderers… not timed
        barrier.wait(120)
        cpu0, start = time.process_time(), time.time()
        messages = run()
        end, cpu = time.time(), time.process_time() - cpu0
        # VmHWM, not ru_maxrss: after exec Linux carries the parent's peak into ru_maxrss.
        rss = peak_rss_mib(os.getpid())
        out.put(ClientResult(messages, start, end, cpu, rss))
    except BaseException as exc:
        barrier.abort()
        out.put(exc)
        raise


def run_clients(work: Work, args: list[Any], timeout: float) -> Combined:
    """Run ``work`` in ``len(args)`` processes at once; combine what they report."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(work, i, a, barrier, out), daemon=True)
        for i, a in enumerate(args)
    ]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"a client process failed: {result!r}") from result
    span = max(r.end for r in results) - min(r.start for r in results)
    return Combined(
        messages=sum(r.messages for r in results),
        seconds=span,
        cpu=sum(r.cpu for r in results),
        peak_rss_mib=max(r.peak_rss_mib for r in results),
    )
