"""``python -m benchmarks.reliability [--full] [--json] [--only WORDS]``: the reliability table.

"Nothing lost, nothing sent twice, nobody let in", in figures: each fault scenario of
``tests/faults`` (the same code the CI tests run) is run on its own stack, and one row says how
many faults were injected, how many readers expected the message, how many got it, how many
were lost, how many copies were duplicates, and the most duplicates the design allows for that
fault. The hostile-input half comes from ``benchmarks.reliability_hostile`` (``run(full)``,
a list of rows with a name, a count of inputs tried, a verdict and counts of their own) when
that module exists, and is printed as a second table.

Quick sizes by default (what CI runs); ``--full`` for the issue's sizes (10,000 readers and 8
SIGKILLs, …). A scenario that breaks a promise, or cannot run, is a failing row and the run
goes on; the exit status is 1 if any row failed. Only servers of the run's own are restarted
or flushed; the shared PostgreSQL gets fresh databases, dropped afterwards.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    """One line of the table (the hostile-input rows use it too)."""

    fault: str
    injected: int
    expected: int
    delivered: int
    lost: int
    duplicated: int
    allowed: int  # most duplicates the design allows for this fault
    ok: bool
    backend: str = ""
    failed: int = 0  # readers not delivered but recorded failed, with the reason
    seconds: float = 0.0
    notes: str = ""
    problems: list[str] = field(default_factory=list)
    section: str = "faults"
    extra: dict[str, int] = field(default_factory=dict)  # a hostile row's own counts

    @property
    def result(self) -> str:
        return "pass" if self.ok else "FAIL"


Scenario = Callable[[Path, bool], list[Any]]
WIDTH = 160


def _scenarios() -> list[tuple[str, Scenario]]:
    # Imported here: `--help` should not need the test support code and its servers.
    from tests.faults import races, scenarios
    from tests.faults.scenarios import sizes
    from tests.support.faulty_smtp import Fault

    def one(fn: Callable[[Path, bool], Any]) -> Scenario:
        return lambda tmp, full: [fn(tmp, full)]

    def smtp(fault: Fault) -> Scenario:
        return lambda tmp, full: [scenarios.smtp_fault(tmp, fault, full)]

    def race(backend: str, kind: str) -> Scenario:
        return lambda tmp, full: [
            races.concurrent_trigger(tmp, backend, kind, sizes(full).race_readers)
        ]

    found: list[tuple[str, Scenario]] = [
        ("sigkill", one(scenarios.sigkill_workers)),
        ("sigterm", one(scenarios.sigterm_worker)),
        ("redis restart", one(scenarios.redis_restart)),
        ("postgres restart", one(scenarios.postgres_restart)),
    ]
    found += [(f"smtp {fault.value}", smtp(fault)) for fault in scenarios.SMTP_FAULTS]
    found += [
        (f"race {kind} {backend}", race(backend, kind))
        for kind in ("alert", "scheduled digest", "digest")
        for backend in ("postgres", "sqlite")
    ]
    return found


def _row(figures: Any) -> Row:
    data = figures.as_dict()
    return Row(
        fault=data["fault"],
        backend=data["backend"],
        injected=data["injected"],
        expected=data["expected"],
        delivered=data["delivered"],
        failed=data["failed"],
        lost=data["lost"],
        duplicated=data["duplicated"],
        allowed=data["allowed"],
        ok=data["ok"],
        seconds=data["seconds"],
        notes=data["notes"],
        problems=list(data["problems"]),
    )


def _coerce(item: Any) -> Row:
    """A hostile-input row, whatever its exact type, as a :class:`Row`: its name, its count
    of inputs tried, its verdict and notes, and its other counts as ``extra`` columns."""
    if isinstance(item, Row):
        return item
    data: dict[str, Any] = dict(item) if isinstance(item, dict) else dict(vars(item))

    def pick(*names: str, default: Any = None) -> Any:
        for name in names:
            if name in data:
                return data[name]
            if hasattr(item, name):
                return getattr(item, name)
        return default

    tried_key = next((k for k in ("injected", "tried") if k in data), None)
    ok = pick("ok", "passed")
    if ok is None:
        ok = str(pick("result", default="")).lower() in ("pass", "ok", "passed")
    extra = {
        key: value
        for key, value in data.items()
        if key != tried_key and isinstance(value, int) and not isinstance(value, bool)
    }
    return Row(
        fault=str(pick("fault", "category", "scenario", "name", default="?")),
        injected=int(pick("injected", "tried", default=0)),
        expected=0,
        delivered=0,
        lost=0,
        duplicated=0,
        allowed=0,
        ok=bool(ok),
        notes=str(pick("notes", "note", default="")),
        problems=[str(p) for p in pick("problems", default=[])],
        section="hostile input",
        extra=extra,
    )


def hostile_rows(full: bool, progress: Callable[[str], None]) -> list[Row]:
    """The other half of the table, when ``benchmarks.reliability_hostile`` exists."""
    try:
        module = importlib.import_module("benchmarks.reliability_hostile")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.reliability_hostile":
            raise
        return []
    if "progress" in inspect.signature(module.run).parameters:
        found = module.run(full, progress=progress)
    else:
        found = module.run(full)
    return [_coerce(item) for item in found]


def run(full: bool, only: Iterable[str] = (), progress: Callable[[str], None] = print) -> list[Row]:
    wanted = [word.lower() for word in only]
    rows: list[Row] = []
    for name, scenario in _scenarios():
        if wanted and not any(word in name for word in wanted):
            continue
        progress(f"running: {name}")
        began = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
                rows += [_row(figures) for figures in scenario(Path(tmp), full)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # also pytest's skip/fail outcomes: a failing row
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            rows.append(
                Row(name, 0, 0, 0, 0, 0, 0, ok=False, problems=[f"could not run: {detail}"])
            )
        progress(f"  {name}: {time.monotonic() - began:.0f} s")
    if not wanted or any("hostile" in word for word in wanted):
        try:
            rows += hostile_rows(full, progress)
        except Exception as exc:
            rows.append(
                Row("hostile input", 0, 0, 0, 0, 0, 0, ok=False, problems=[f"error: {exc!r}"])
            )
    return rows


def print_table(rows: list[Row], full: bool, console: Console) -> None:
    faults = [row for row in rows if row.section != "hostile input"]
    hostile = [row for row in rows if row.section == "hostile input"]
    size = "full" if full else "quick"
    if faults:
        console.print(_fault_table(faults, f"Reliability under faults ({size} sizes)"))
    if hostile:
        console.print(_hostile_table(hostile, f"Hostile input ({size} sizes)"))
    for row in rows:
        if row.notes:
            where = f" ({row.backend})" if row.backend else ""
            console.print(f"[dim]{row.fault}{where}: {row.notes}[/]", highlight=False)
    for row in rows:
        for problem in row.problems:
            where = f" ({row.backend})" if row.backend else ""
            console.print(f"[red]{row.fault}{where}: {problem[:600]}[/]", highlight=False)


def _verdict(row: Row) -> str:
    return "[green]pass[/]" if row.ok else "[bold red]FAIL[/]"


def _fault_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("fault")
    table.add_column("backend")
    for name in ("injected", "expected", "delivered", "failed", "lost", "duplicated"):
        table.add_column(name, justify="right")
    table.add_column("max dup.\nallowed", justify="right")
    table.add_column("time", justify="right")
    table.add_column("result")
    for row in rows:
        table.add_row(
            row.fault,
            row.backend,
            str(row.injected),
            f"{row.expected:,}",
            f"{row.delivered:,}",
            str(row.failed),
            str(row.lost),
            str(row.duplicated),
            str(row.allowed),
            f"{row.seconds:.0f} s",
            _verdict(row),
        )
    return table


def _hostile_table(rows: list[Row], title: str) -> Table:
    columns = list(dict.fromkeys(key for row in rows for key in row.extra))
    table = Table(title=title, title_justify="left")
    table.add_column("hostile input")
    table.add_column("tried", justify="right")
    for key in columns:
        table.add_column(key.replace("_", " "), justify="right")
    table.add_column("result")
    for row in rows:
        counts = [f"{row.extra[key]:,}" if key in row.extra else "" for key in columns]
        table.add_row(row.fault, f"{row.injected:,}", *counts, _verdict(row))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (slow)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--only", nargs="*", default=[], help="run the scenarios whose name has one of these words"
    )
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    if console.width < WIDTH:  # not a terminal (a pipe, a file): room for every column
        console = Console(stderr=args.json, width=WIDTH)
    rows = run(args.full, args.only, progress=lambda text: console.print(text, style="dim"))
    if args.json:
        document = {
            "full": args.full,
            "rows": [asdict(row) | {"result": row.result} for row in rows],
        }
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        print_table(rows, args.full, console)
    return 0 if rows and all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
