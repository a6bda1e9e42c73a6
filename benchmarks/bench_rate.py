"""Do shared rate limits hold across worker processes? (Deliverability, must-show 3.)

Two Celery worker processes on PostgreSQL + Redis send one edition through a real SMTP server
with a shared limit (a Redis token bucket), and the arrival rate at the server is measured over
a steady window. Then the same with a per-recipient-domain limit only. Prints a table:

    python -m benchmarks.bench_rate [--rate 200] [--domain-rate 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.support.stack import Stack, build_stack, teardown_stack


def measure(stack: Stack, seconds: float, warmup: float = 3.0) -> float:
    """Messages per second arriving at the server over ``seconds`` after ``warmup``."""
    time.sleep(warmup)
    start_count, start = len(stack.smtp.received), time.monotonic()
    time.sleep(seconds)
    return (len(stack.smtp.received) - start_count) / (time.monotonic() - start)


def run(limit: dict[str, float], readers: int, domains: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stack = build_stack(
            "postgres",
            Path(tmp),
            lease_seconds=600.0,
            digest_batch_size=200,
            claim_chunk=50,
            **limit,
        )
        try:
            per_domain = readers // domains
            for d in range(domains):
                stack.add_readers(per_domain, start=d * per_domain + 1, domain=f"d{d}.example.com")
            for _ in range(2):  # 2 workers on 2 processes
                stack.start_worker(beat=False, queues="alerts", concurrency=1)
            time.sleep(3)  # workers up
            stack.service.trigger_alert(stack.add_story())
            return measure(stack, seconds)
        finally:
            teardown_stack(stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--domain-rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    table = Table(title="Shared rate limits, 2 worker processes, PostgreSQL + Redis")
    for column in ("limit", "configured msg/s", "measured msg/s", "deviation"):
        table.add_column(column, justify="right")
    readers = int(args.rate * (args.seconds + 8))
    got = run({"rate_per_second": args.rate}, readers, 50, args.seconds)
    table.add_row("global", f"{args.rate:.0f}", f"{got:.1f}", f"{got / args.rate - 1:+.1%}")
    readers = int(args.domain_rate * (args.seconds + 8))
    got = run({"domain_rate_per_second": args.domain_rate}, readers, 1, args.seconds)
    table.add_row(
        "one domain", f"{args.domain_rate:.0f}", f"{got:.1f}", f"{got / args.domain_rate - 1:+.1%}"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
