"""``python -m benchmarks.reliability_hostile [--full]``: hostile inputs tried, accepted, rejected,
and server errors, one row per kind of input (the hostile half of ``benchmarks.reliability``).

The inputs and the checks are the ones of ``tests/hostile`` (the CI tests), with more inputs and
a fixed seed:

* header injection: reader names and addresses through the CSV importer, story titles through
  ``upsert_story``, each message built by ``EditionSender.message_for`` and parsed back;
  "unsafe" counts messages with a header, a recipient or a Subject that was not intended, or
  inputs accepted and then failing at send time;
* the CVE-2023-27043 address shapes; the API fuzzed by Schemathesis (SQLite, and PostgreSQL when
  it answers) and the role check of every API route; the bounce/DSN parser and the CSV importer
  fuzzed with a 1 s bound; the OWASP XSS payloads in emails, reader pages and the API;
* timing: ``POST /subscribe`` for new versus existing addresses, medians over 1,000 requests each
  (a figure, not a pass/fail).

Quick sizes by default; ``--full`` runs about ten times as many inputs. Inputs are generated
with a fixed seed, so two runs of the same code give the same counts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Row:
    """One line of the table."""

    category: str
    tried: int
    accepted: int
    rejected: int
    server_errors: int
    note: str = ""
    ok: bool = True  # no server error and nothing unsafe got through
    problems: list[str] = field(default_factory=list)

    # The names benchmarks.reliability's table reads.
    @property
    def fault(self) -> str:
        return self.category

    @property
    def injected(self) -> int:
        return self.tried

    @property
    def notes(self) -> str:
        return self.note


def _examples(strategy: Any, count: int, seed: int) -> list[Any]:
    """``count`` values drawn from a Hypothesis strategy, the same ones every run."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    found: list[Any] = []

    @fixed_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# -- header injection ------------------------------------------------------------------------

#: The CVE-2023-27043 shapes tests/mailer/test_addresses.py lists (tests/hostile adds the rest).
TESTED_IN_TEST_ADDRESSES = [
    "alice@example.org)<bob@example.org>",
    '"alice@example.org" <bob@example.org>',
    "alice@example.org)@evil.example",
    '"alice@example.org)"@evil.example',
    "alice@example.org <bob@example.org>",
]


def _verdict_row(category: str, inputs: Iterable[T], attempt: Callable[[T], Any]) -> Row:
    row = Row(category, 0, 0, 0, 0)
    unsafe = 0
    for value in inputs:
        row.tried += 1
        try:
            verdict = attempt(value)
        except Exception as exc:
            row.server_errors += 1
            row.problems.append(f"{value!r}: uncaught {type(exc).__name__}: {exc}")
            continue
        row.accepted += verdict.accepted
        row.rejected += not verdict.accepted
        if verdict.problems:
            unsafe += 1
            row.problems.append(f"{value!r}: {'; '.join(verdict.problems)[:300]}")
    row.note = f"unsafe messages: {unsafe}"
    row.ok = not row.server_errors and not unsafe
    return row


def header_rows(folder: Path, full: bool) -> list[Row]:
    from tests.hostile import harness as h

    n = 2000 if full else 200
    rows = []
    room = h.Newsroom(folder / "names")
    edition = h.benign_edition(room)
    names = _examples(h.hostile_text, n, 1)
    rows.append(
        _verdict_row(
            "header injection: reader names (CSV)",
            enumerate(names),
            lambda item: h.try_name(room, edition, item[1], f"name{item[0]}@example.com"),
        )
    )
    addresses = _examples(h.hostile_address, n, 2) + h.ENCODED_WORD_ADDRESSES
    rows.append(
        _verdict_row(
            "header injection: addresses (CSV)",
            addresses,
            lambda raw: h.try_address(room, edition, raw),
        )
    )
    room.close()

    alerts = h.Newsroom(folder / "titles")
    alerts.add_reader("amal@example.com", "أمل")
    alerts.add_reader("قارئ@مثال.مصر", "قارئ")
    baseline = h.benign_edition(alerts).baseline
    alerts.deliver()
    titles = [f"خبر {fragment} عاجل" for fragment in h.FRAGMENTS]  # each piece once, then mixes
    titles += _examples(h.hostile_text, n // 4, 3)
    rows.append(
        _verdict_row(
            "header injection: story titles → Subject",
            titles,
            lambda title: h.try_title(alerts, baseline, title),
        )
    )
    alerts.close()

    from mailer.addresses import InvalidAddress, normalise

    row = Row("CVE-2023-27043 address shapes", 0, 0, 0, 0)
    for raw in [*h.CVE_2023_27043, *TESTED_IN_TEST_ADDRESSES]:
        row.tried += 1
        try:
            normalise(raw)
        except InvalidAddress:
            row.rejected += 1
        except Exception as exc:
            row.server_errors += 1
            row.problems.append(f"{raw!r}: {exc!r}")
        else:
            row.accepted += 1
            row.problems.append(f"{raw!r} accepted")
    row.ok = row.accepted == 0 and not row.server_errors
    row.note = "all refused by normalise" if row.ok else "some accepted"
    return [*rows, row]


# -- the API ---------------------------------------------------------------------------------


def _postgres_url() -> str:
    """A fresh PostgreSQL database, or "" when none answers."""
    from tests.support.stack import create_pg_database

    try:
        return create_pg_database()
    except Exception:  # no server, no rights: the row says n/a
        return ""


def api_rows(folder: Path, full: bool) -> list[Row]:
    from tests.hostile.apifuzz import fuzz, target
    from tests.hostile.harness import Newsroom
    from tests.support.stack import drop_pg_database

    rows = []
    for backend in ("sqlite", "postgres"):
        url = _postgres_url() if backend == "postgres" else ""
        if backend == "postgres" and not url:
            rows.append(Row("API fuzz (Schemathesis), postgres", 0, 0, 0, 0, "n/a (no PostgreSQL)"))
            continue
        room = Newsroom(folder / f"api-{backend}", url)
        try:
            t = target(room, postgres=bool(url))
            report = fuzz(t, 150 if full else 20, fixed=True)
            if backend == "sqlite":
                rows.append(role_row(t))
        finally:
            room.close()
            if url:
                drop_pg_database(url)
        rows.append(
            Row(
                f"API fuzz (Schemathesis), {backend}",
                report.tried,
                report.accepted,
                report.rejected,
                len(report.server_errors),
                f"schema violations: {len(report.schema_violations)}; {report.seconds:.0f} s",
                ok=not report.server_errors and not report.schema_violations,
                problems=report.server_errors[:3] + report.schema_violations[:2],
            )
        )
    return rows


def role_row(t: Any) -> Row:
    """Every API route without a token (401) and with each role it does not allow (403)."""
    import re

    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from mailer.auth import create_token
    from tests.api.test_roles import allowed_roles

    row = Row("API: no token or the wrong role", 0, 0, 0, 0)
    tokens: dict[str, str] = {}
    with Session(t.engine) as session:
        for role in ("editor", "operator"):
            _, tokens[role] = create_token(session, role, f"{role}-roles")
        session.commit()
    with TestClient(t.app, raise_server_exceptions=False) as http:
        for path, item in http.get("/openapi.json").json()["paths"].items():
            if not path.startswith("/api/v1/"):
                continue
            url = re.sub(r"\{[^}]+\}", "1", path)
            allowed = allowed_roles(path.removeprefix("/api/v1"))
            callers: dict[str, dict[str, str]] = {"no token": {}} | {
                role: {"Authorization": f"Bearer {secret}"}
                for role, secret in tokens.items()
                if role not in allowed
            }
            for method in item:
                for caller, headers in callers.items():
                    row.tried += 1
                    answer = http.request(method.upper(), url, headers=headers, json={})
                    want = 401 if caller == "no token" else 403
                    if answer.status_code >= 500:
                        row.server_errors += 1
                    elif answer.status_code == want:
                        row.rejected += 1
                    else:
                        row.accepted += 1
                        row.problems.append(f"{method.upper()} {path} as {caller}: {answer}")
    row.ok = not row.accepted and not row.server_errors
    row.note = "every route refused" if row.ok else "some let in"
    return row


# -- parsers ---------------------------------------------------------------------------------


def bounce_row(full: bool) -> Row:
    from mailer.bounces import parse

    corpus = sorted(
        (Path(__file__).resolve().parent.parent / "tests/fixtures/bounces").glob("*.eml")
    )
    samples = [p.read_bytes() for p in corpus]
    rng = random.Random(4)
    n = 5000 if full else 500
    row = Row("bounce/DSN parser fuzz", 0, 0, 0, 0)
    slowest = 0.0
    for i in range(n):
        data = bytearray(rng.randbytes(rng.randint(0, 4096)) if i % 3 == 0 else rng.choice(samples))
        if i % 3:
            for _ in range(rng.randint(1, 8)):
                at = rng.randint(0, len(data))
                junk = rng.randbytes(rng.randint(1, 40))
                how = rng.choice(["flip", "cut", "insert", "drop"])
                if how == "flip" and data:
                    data[min(at, len(data) - 1)] ^= junk[0] or 1
                elif how == "cut":
                    del data[at:]
                elif how == "insert":
                    data[at:at] = junk
                else:
                    del data[at : at + len(junk) * 50]
        row.tried += 1
        started = time.perf_counter()
        try:
            reports = parse(bytes(data))
        except Exception as exc:
            row.server_errors += 1
            row.problems.append(f"uncaught {type(exc).__name__}: {exc}")
            continue
        slowest = max(slowest, time.perf_counter() - started)
        if any(r.kind != "not-bounce" for r in reports):
            row.accepted += 1
        else:
            row.rejected += 1
    row.ok = not row.server_errors and slowest < 1.0
    row.note = f"accepted = read as a bounce; slowest {slowest * 1000:.0f} ms (bound 1 s)"
    return row


def csv_row(folder: Path, full: bool) -> Row:
    from hypothesis import strategies as st

    from tests.hostile import harness as h

    room = h.Newsroom(folder / "csv")
    n = 1500 if full else 150
    row_strategy = st.tuples(
        st.one_of(st.integers(0, 10**9).map(lambda k: f"r{k}@example.com"), h.hostile_address),
        h.hostile_text,
        st.one_of(st.sampled_from(["", "breaking", "syria;economy", "nope"]), h.hostile_text),
        st.one_of(st.sampled_from(["", "instant", "daily", "hourly"]), h.hostile_text),
    )
    files = [
        (h.csv_bytes(h.CSV_HEADER, rows), rows)
        for rows in _examples(st.lists(row_strategy, max_size=12), n, 5)
    ]
    # The files of the tests' regressions: not UTF-8, a field over csv's limit, and a quoted
    # field over it holding a line that must not become a reader.
    files.append((b"email,name\na@example.com,\xff\xfe\nb@example.com,b\n", None))
    files.append((b"email,name\nc@example.com," + b"x" * 140_000 + b"\n", None))
    files.append(
        (b'email,name\nd@example.com,"' + b"x" * 140_000 + b'\ninside@evil.example,E\ny"\n', None)
    )
    result = Row("CSV importer fuzz (rows)", 0, 0, 0, 0)
    slowest, crashed, wrong = 0.0, 0, 0
    for data, rows in files:
        verdict = h.try_csv(room, data, rows)
        slowest = max(slowest, verdict.seconds)
        result.tried += verdict.rows or (len(rows) if rows else 1)
        result.accepted += verdict.accepted
        result.rejected += verdict.rejected
        if verdict.crashed:
            crashed += 1
            result.problems.append(verdict.crashed)
        elif verdict.problems:
            wrong += 1
            result.problems += verdict.problems
    if room.reader("inside@evil.example") is not None:
        wrong += 1
        result.problems.append("a line inside an unreadable quoted field was imported as a reader")
    room.close()
    result.server_errors = crashed
    result.ok = not crashed and not wrong and slowest < 1.0
    result.note = (
        f"{len(files)} files: {crashed} raised, {wrong} misreported rows; "
        f"slowest {slowest * 1000:.0f} ms (bound 1 s)"
    )
    return result


# -- XSS -------------------------------------------------------------------------------------


def xss_rows(folder: Path) -> list[Row]:
    from tests.hostile import xss
    from tests.hostile.apifuzz import target
    from tests.hostile.harness import Newsroom, xss_payloads

    payloads = xss_payloads()
    surfaces = []
    room = Newsroom(folder / "xss-email", digest_story_limit=len(payloads) + 5)
    surfaces.append(xss.email_surface(room, payloads))
    room.close()
    room = Newsroom(folder / "xss-pages")
    surfaces.append(xss.pages_surface(room, payloads))
    room.close()
    room = Newsroom(folder / "xss-api")
    surfaces.append(xss.api_surface(target(room), payloads))
    room.close()
    return [
        Row(
            s.name,
            s.tried,
            s.accepted,
            s.rejected,
            s.server_errors,
            f"executable outputs: {len(s.findings)}",
            ok=not s.findings and not s.server_errors,
            problems=s.findings[:10],
        )
        for s in surfaces
    ]


# -- timing ----------------------------------------------------------------------------------


def timing_row(folder: Path, full: bool) -> Row:
    """``POST /subscribe`` for new and for existing addresses, interleaved; the medians."""
    from tests.hostile.harness import Newsroom
    from tests.hostile.xss import CSRF, ReaderSite

    n = 1000
    room = Newsroom(folder / "timing")
    site = ReaderSite(room)
    if "post" not in site.client.get("/openapi.json").json()["paths"].get("/subscribe", {}):
        room.close()
        return Row("subscribe timing: new vs existing", 0, 0, 0, 0, "n/a (no /subscribe)")
    room.import_csv(room.write_csv({"email": f"old{i}@example.com"} for i in range(n + 20)))
    form = {"topics": "breaking", "cadence": "instant", "name": ""}
    row = Row("subscribe timing: new vs existing", 0, 0, 0, 0)
    times: dict[str, list[float]] = {"new": [], "existing": []}
    token = ""
    for i in range(n + 20):  # the first 20 of each warm up and are not counted
        for kind, address in (("new", f"new{i}@example.com"), ("existing", f"old{i}@example.com")):
            if not token:
                found = CSRF.search(site.client.get("/subscribe").text)
                token = found.group(1) if found else ""
            started = time.perf_counter()
            answer = site.client.post(
                "/subscribe", data=form | {"csrf_token": token, "email": address}
            )
            elapsed = time.perf_counter() - started
            if answer.status_code == 403:
                token = ""  # a one-time token: fetch another (not timed)
            row.tried += 1
            row.accepted += answer.status_code == 200
            row.rejected += 400 <= answer.status_code < 500
            row.server_errors += answer.status_code >= 500
            if i >= 20 and answer.status_code == 200:
                times[kind].append(elapsed)
        room.dispatcher.messages.clear()
    room.close()
    new, old = (statistics.median(times[k]) * 1000 for k in ("new", "existing"))
    row.note = (
        f"medians over {len(times['new'])} + {len(times['existing'])}: new {new:.2f} ms, "
        f"existing {old:.2f} ms, difference {abs(new - old):.2f} ms (target < 5 ms)"
    )
    row.ok = not row.server_errors and abs(new - old) < 5.0
    return row


# -- the table -------------------------------------------------------------------------------

Step = Callable[[Path, bool], list[Row]]
STEPS: list[tuple[str, Step]] = [
    ("header injection", header_rows),
    ("api", api_rows),
    ("bounce parser", lambda folder, full: [bounce_row(full)]),
    ("csv importer", lambda folder, full: [csv_row(folder, full)]),
    ("xss", lambda folder, full: xss_rows(folder)),
    ("timing", lambda folder, full: [timing_row(folder, full)]),
]


def run(full: bool, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every hostile-input row; a step that cannot run is a failing row, and the rest go on."""
    rows: list[Row] = []
    for name, step in STEPS:
        if progress:
            progress(f"running: hostile {name}")
        try:
            with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
                rows += step(Path(tmp), full)
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            rows.append(Row(name, 0, 0, 0, 0, "could not run", ok=False, problems=[detail]))
    return rows


def format_table(rows: list[Row], full: bool) -> str:
    head = ("hostile input", "tried", "accepted", "rejected", "server errors", "result", "note")
    cells = [
        (r.category, f"{r.tried:,}", f"{r.accepted:,}", f"{r.rejected:,}", f"{r.server_errors:,}",
         "pass" if r.ok else "FAIL", r.note)
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head) - 1)]
    lines = [f"Hostile input ({'full' if full else 'quick'} sizes)"]
    for i, c in enumerate([head, *cells]):
        numbers = [v.rjust(w) for v, w in zip(c[1:5], widths[1:5], strict=True)]
        left = c[0].ljust(widths[0])
        lines.append("  ".join([left, *numbers, c[5].ljust(widths[5]), c[6]]))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    for r in rows:
        lines += [f"  {r.category}: {p[:400]}" for p in r.problems[:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability_hostile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="ten times the inputs (slow)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.full, progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_table(rows, args.full))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
