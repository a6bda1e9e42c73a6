"""``python -m benchmarks [--quick] [--readers N] [--workers N] [--json FILE]``.

Runs every scenario on one fresh stack (PostgreSQL database, Redis database, SMTP sink, Celery
workers started per scenario) and prints one table. A scenario that fails becomes an "error"
row and the run goes on; the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks import population
from benchmarks.env import REPO, BenchEnv, close_env, open_env
from benchmarks.report import Row, as_json, print_table
from benchmarks.scenarios import alerts, ceiling, digest, naive, planning, stages, subscribe
from mailer.config import Settings


@dataclass(frozen=True)
class Sizes:
    readers: int  # digest end to end, unsigned
    signed_readers: int  # digest end to end, DKIM-signed
    ceiling_messages: int
    naive_readers: int
    stage_readers: int
    stage_repeat: int
    planning_readers: int
    memory_messages: int  # the memory row sends this many of the planned edition's readers
    alert_digest_readers: int
    alert_readers: int
    subscribe_seconds: float
    subscribe_connections: int


SCENARIOS = ("stages", "ceiling", "naive", "digest", "signed", "alerts", "planning", "subscribe")
FULL = Sizes(
    readers=100_000,
    signed_readers=100_000,
    ceiling_messages=40_000,
    naive_readers=2_000,
    stage_readers=5_000,
    stage_repeat=20,
    planning_readers=1_000_000,
    memory_messages=200_000,
    alert_digest_readers=100_000,
    alert_readers=10_000,
    subscribe_seconds=10.0,
    subscribe_connections=16,
)
QUICK = Sizes(
    readers=5_000,
    signed_readers=2_000,
    ceiling_messages=5_000,
    naive_readers=200,
    stage_readers=1_000,
    stage_repeat=5,
    planning_readers=10_000,
    memory_messages=5_000,
    alert_digest_readers=5_000,
    alert_readers=1_000,
    subscribe_seconds=2.0,
    subscribe_connections=16,
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI (< 90 s)")
    parser.add_argument(
        "--readers", type=int, help="readers of both digest rows (default 100,000; quick 5,000)"
    )
    parser.add_argument(
        "--memory-messages",
        type=int,
        help="how many of the planned million the memory row sends (default 200,000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=Settings().worker_concurrency,
        help="sending processes (Celery -c); also the sink ceiling's and baseline's clients",
    )
    parser.add_argument(
        "--digest-nice",
        type=int,
        default=0,
        help="run the alert scenario's digest workers under nice N (a deployment choice)",
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="uvicorn processes for the subscribe scenario (production runs one)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of: {', '.join(SCENARIOS)} (memory comes with planning)",
    )
    return parser.parse_args(argv)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def attempt(name: str, section: str, rows: list[Row], fn: Callable[[], list[Row]]) -> bool:
    note(f"· {name} …")
    start = time.monotonic()
    try:
        rows.extend(fn())
    except Exception as exc:
        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        rows.append(Row(name, section, figure=f"error: {first[:120]}", ok=False))
        return False
    finally:
        note(f"  {time.monotonic() - start:.1f} s")
    return True


def machine() -> dict[str, object]:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
        "load_average_before": os.getloadavg(),
    }


def run_all(
    env: BenchEnv, sizes: Sizes, args: argparse.Namespace, only: set[str]
) -> tuple[list[Row], bool]:
    workers = args.workers
    rows: list[Row] = []
    ok = True
    planned: list[planning.Planned] = []

    def plan() -> list[Row]:
        found, edition = planning.run_planning(env, sizes.planning_readers)
        planned.append(edition)
        return found

    def memory() -> list[Row]:
        if not planned:
            raise RuntimeError("planning failed: nothing to send")
        baseline = next((r.peak_rss_mib for r in rows if r.scenario == digest.UNSIGNED), None)
        return planning.run_memory(env, planned[0], workers, sizes.memory_messages, baseline)

    scenarios: list[tuple[str, str, str, Callable[[], list[Row]]]] = [
        (
            "stages",
            "stages",
            "stages",
            lambda: stages.run(env, sizes.stage_readers, sizes.stage_repeat),
        ),
        (
            "ceiling",
            "sink ceiling",
            "throughput",
            lambda: ceiling.run(env, sizes.ceiling_messages, workers),
        ),
        (
            "naive",
            "naive baseline",
            "throughput",
            lambda: naive.run(env, sizes.naive_readers, workers),
        ),
        (
            "digest",
            digest.UNSIGNED,
            "throughput",
            lambda: digest.run_unsigned(env, sizes.readers, workers),
        ),
        (
            "signed",
            digest.SIGNED,
            "throughput",
            lambda: digest.run_signed(env, sizes.signed_readers, workers),
        ),
        (
            "alerts",
            alerts.NAME,
            "alerts",
            lambda: alerts.run(
                env, sizes.alert_digest_readers, sizes.alert_readers, workers, args.digest_nice
            ),
        ),
        ("planning", "planning", "planning", plan),
        ("memory", "memory", "planning", memory),
        (
            "subscribe",
            subscribe.NAME,
            "web",
            lambda: subscribe.run(
                env, sizes.subscribe_seconds, sizes.subscribe_connections, args.web_processes
            ),
        ),
    ]
    wanted = [key for key, *_ in scenarios if not only or key in only]
    needs = {
        "digest": sizes.readers,
        "signed": sizes.signed_readers,
        "planning": sizes.planning_readers,
        "alerts": max(sizes.alert_digest_readers, sizes.alert_readers),
        "stages": sizes.stage_readers,
    }
    largest = max([needs.get(key, 0) for key in wanted] + [1])
    note(f"· loading {largest:,} readers …")
    population.load_readers(env.settings, largest)
    for key, name, section, fn in scenarios:
        if not only or key in only or (key == "memory" and "planning" in only):
            ok = attempt(name, section, rows, fn) and ok
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only - set(SCENARIOS):
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(only - set(SCENARIOS)))}")
    sizes = QUICK if args.quick else FULL
    if args.readers:
        sizes = replace(sizes, readers=args.readers, signed_readers=args.readers)
    if args.memory_messages:
        sizes = replace(sizes, memory_messages=args.memory_messages)
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    meta: dict[str, object] = {
        "command": command,
        "sizes": asdict(sizes),
        "workers": args.workers,
        **machine(),
    }
    tmp = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    started = time.monotonic()
    env = open_env(tmp)
    try:
        rows, ok = run_all(env, sizes, args, only)
    finally:
        close_env(env)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["load_average_after"] = os.getloadavg()
    title = (
        f"{command}  ·  {meta['cpus']} CPUs, {args.workers} sending processes  ·  "
        f"{meta['commit']}  ·  {meta['seconds']} s"
    )
    print_table(rows, title)
    if args.json:
        args.json.write_text(as_json(rows, meta), encoding="utf-8")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        note(f"logs kept in {tmp}")
    return 0 if ok else 1
