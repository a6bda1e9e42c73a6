"""Subscribers import: a generated CSV of N rows (default 100,000) with 1% bad rows.

Prints rows per second, the peak resident memory of the process (VmHWM) and the tracemalloc
peak of the import itself, measured on the full file and on a tenth of it: an import that
streams has the same peak for both. Checks that every good row is in and that every bad row
is reported with its line number.

    python -m benchmarks.bench_import [--rows N] [--consented] [--database-url URL]

Without ``--database-url`` each run gets a fresh SQLite file in a temporary folder; with one,
the URL must point at an empty database that each run upgrades and empties. Without
``--consented`` every imported reader is pending and gets a queued confirmation email, as an
operator's import without consent does.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import NullDispatcher
from mailer.migrate import upgrade
from mailer.stories import ensure_topics
from mailer.subscribers import import_readers, read_csv

BAD = ("not-an-address", "", "a@example.com;b@example.com", "@example.com", "ali@")
TABLES = ("transactional_messages", "subscriptions", "subscribers")


def write_csv(path: Path, rows: int, bad_share: float, seed: int = 7) -> set[int]:
    """The file, written row by row; returns the line numbers of its bad rows."""
    pick = random.Random(seed)
    bad_lines: set[int] = set()
    cadences = ("instant", "daily", "weekly")
    topics = ("breaking", "breaking;syria", "egypt;economy", "syria")
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["email", "name", "topics", "cadence", "locale", "timezone"])
        for i in range(rows):
            line = i + 2
            email = f"reader{i:07d}@example{i % 97}.com"
            topic, cadence = pick.choice(topics), pick.choice(cadences)
            if pick.random() < bad_share:
                bad_lines.add(line)
                kind = pick.randrange(3)
                if kind == 0:
                    email = pick.choice(BAD)
                elif kind == 1:
                    cadence = "hourly"
                else:
                    topic = "sports"
            out.writerow([email, "قارئ تجريبي", topic, cadence, "ar", "Africa/Cairo"])
    return bad_lines


def vm_hwm_mib() -> float:
    """Peak resident set of this process so far (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Run:
    rows: int
    seconds: float
    added: int
    errors: int
    confirmations: int
    traced_peak_mib: float | None


def run_import(
    settings: Settings, path: Path, *, consented: bool, traced: bool
) -> tuple[Run, list[int]]:
    """Import ``path`` into a freshly upgraded, empty database; the run and its error lines."""
    upgrade(settings.database)
    engine = make_engine(settings.database, fast_commit=True)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # DELETE would check foreign keys row by row
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    report = import_readers(
        engine, read_csv(path), settings, consented=consented, dispatcher=NullDispatcher()
    )
    seconds = time.perf_counter() - started
    peak = None
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    engine.dispose()
    run = Run(report.read, seconds, report.added, len(report.errors), report.confirmations, peak)
    return run, [line for line, _ in report.errors]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bad", type=float, default=0.01, help="share of bad rows")
    parser.add_argument("--consented", action="store_true")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        full, tenth = folder / "readers.csv", folder / "tenth.csv"
        bad_lines = write_csv(full, args.rows, args.bad)
        write_csv(tenth, max(args.rows // 10, 1), args.bad)
        size = full.stat().st_size / 2**20

        def settings(name: str) -> Settings:
            return Settings(
                data_dir=folder / name, database_url=args.database_url, hash_key="bench"
            )

        timed, error_lines = run_import(
            settings("timed"), full, consented=args.consented, traced=False
        )
        hwm = vm_hwm_mib()
        assert set(error_lines) == bad_lines, "bad rows reported with the wrong line numbers"
        assert timed.added == args.rows - len(bad_lines), "a good row is missing"
        print(
            f"import of {args.rows:,} rows ({size:.1f} MiB, {len(bad_lines):,} bad), "
            f"{'consented' if args.consented else 'with confirmations queued'}, "
            f"{settings('x').database.split(':')[0]}"
        )
        print(
            f"  {timed.seconds:.1f} s  {timed.rows / timed.seconds:,.0f} rows/s  "
            f"added {timed.added:,}  refused {timed.errors:,} (lines match)  "
            f"confirmations {timed.confirmations:,}"
        )
        print(f"  peak RSS of the process (VmHWM): {hwm:.0f} MiB")
        if not args.no_trace:
            small, _ = run_import(settings("t1"), tenth, consented=args.consented, traced=True)
            large, _ = run_import(settings("t2"), full, consented=args.consented, traced=True)
            print(
                f"  tracemalloc peak of the import: {small.traced_peak_mib:.1f} MiB for "
                f"{small.rows:,} rows, {large.traced_peak_mib:.1f} MiB for {large.rows:,} rows"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
