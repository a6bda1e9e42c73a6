"""Operators' imports and exports: streaming, per-row errors by line, one transaction per chunk,
confirmations for readers who did not consent, and a CSV export that imports back."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mailer import cli, db
from mailer.config import Settings, get_settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import Subscriber, Subscription, TransactionalMessage
from mailer.stories import ensure_topics
from mailer.subscribers import (
    ReaderRow,
    export_readers,
    import_readers,
    read_csv,
    write_csv,
)

BAD_KINDS = ("not-an-address", "", "x@example.com,y@example.com", "bad cadence", "bad topic")


def write_readers(path: Path, rows: int, bad_every: int = 100, seed: int = 1) -> set[int]:
    """A subscribers CSV with one bad row in ``bad_every``; the bad rows' line numbers."""
    pick = random.Random(seed)
    bad: set[int] = set()
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["email", "name", "topics", "cadence"])
        for i in range(rows):
            line = i + 2  # the header is line 1
            email, topics, cadence = f"reader{i}@example.com", "breaking;syria", "instant"
            if i % bad_every == bad_every // 2:
                kind = pick.choice(BAD_KINDS)
                bad.add(line)
                if kind == "bad cadence":
                    cadence = "hourly"
                elif kind == "bad topic":
                    topics = "sports"
                else:
                    email = kind
            out.writerow([email, "قارئ", topics, cadence])
    return bad


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    settings = Settings(data_dir=tmp_path, hash_key="h")
    upgrade(settings.database)
    built = make_engine(settings.database)
    with Session(built) as session:
        ensure_topics(session)
        session.commit()
    yield built
    built.dispose()


def counts(engine: Engine) -> tuple[int, int, int]:
    with Session(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(Subscriber)) or 0,
            session.scalar(select(func.count()).select_from(Subscription)) or 0,
            session.scalar(select(func.count()).select_from(TransactionalMessage)) or 0,
        )


def test_an_import_takes_the_good_rows_and_reports_the_bad_by_line(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "readers.csv"
    bad = write_readers(path, 3000)
    woken = MemoryDispatcher()
    progress: list[int] = []
    report = import_readers(
        engine,
        read_csv(path),
        Settings(hash_key="h"),
        consented=False,
        chunk=500,
        dispatcher=woken,
        progress=progress.append,
    )
    assert report.read == 3000 and len(bad) == 30
    assert {line for line, _ in report.errors} == bad
    assert report.added == 2970 == report.confirmations
    assert counts(engine) == (2970, 2 * 2970, 2970)
    assert sum(progress) == 2970 and max(progress) == 500  # streamed in chunks
    assert {queue for queue, _ in woken.messages} == {"digests"}  # the bulk queue
    with Session(engine) as session:
        assert set(session.scalars(select(Subscriber.status))) == {"pending"}


def test_a_chunk_that_fails_leaves_nothing_of_itself_behind(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailer import transactional

    calls = []
    real = transactional.enqueue_many

    def failing_second_chunk(*args: object, **kwargs: object) -> list[int]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transactional, "enqueue_many", failing_second_chunk)
    rows = [ReaderRow(line=i + 2, email=f"r{i}@example.com") for i in range(250)]
    with pytest.raises(RuntimeError):
        import_readers(engine, rows, Settings(hash_key="h"), consented=False, chunk=100)
    assert counts(engine) == (100, 100, 100)  # the first chunk, whole; the second, not at all


def test_the_export_imports_back_as_it_was(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(hash_key="h")
    rows = [
        ReaderRow(line=2, email="amal@example.com", name="أمل", topics=("breaking", "syria")),
        ReaderRow(line=3, email="amal@example.com", topics=("economy",), cadence="weekly"),
        ReaderRow(line=4, email="badr@example.com", timezone="Asia/Beirut"),
    ]
    import_readers(engine, rows, settings, consented=True)
    out = io.StringIO()
    assert write_csv(export_readers(engine, chunk=1), out) == 3
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["email"], r["topics"], r["cadence"]) for r in exported] == [
        ("amal@example.com", "breaking;syria", "instant"),
        ("amal@example.com", "economy", "weekly"),
        ("badr@example.com", "breaking", "instant"),
    ]
    assert exported[2]["timezone"] == "Asia/Beirut" and exported[0]["status"] == "active"

    path = tmp_path / "export.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    other = Settings(data_dir=tmp_path / "other", hash_key="h")
    upgrade(other.database)
    copy = make_engine(other.database)
    with Session(copy) as session:
        ensure_topics(session)
        session.commit()
    report = import_readers(copy, read_csv(path), other, consented=True)
    assert (report.added, report.existing, report.errors) == (2, 1, [])
    again = io.StringIO()
    write_csv(export_readers(copy), again)
    kept = ("email", "name", "topics", "cadence", "locale", "timezone", "status")
    assert [tuple(r[k] for k in kept) for r in csv.DictReader(io.StringIO(again.getvalue()))] == [
        tuple(r[k] for k in kept) for r in exported
    ]
    copy.dispose()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MAILER_DISPATCHER", "mailer.dispatch:NullDispatcher")
    monkeypatch.setenv("MAILER_HASH_KEY", "h")

    def reset() -> None:
        get_settings.cache_clear()
        cli.service.cache_clear()
        db.reset_engine()

    reset()
    runner = CliRunner()
    assert runner.invoke(cli.app, ["db", "upgrade"]).exit_code == 0
    yield tmp_path
    if db._engine is not None:
        db._engine.dispose()
    reset()


def test_the_cli_imports_with_confirmations_and_exports(cli_env: Path) -> None:
    path = cli_env / "readers.csv"
    bad = write_readers(path, 300, bad_every=50)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["subscribers", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == 294 == report["confirmations"]
    assert {e["line"] for e in report["errors"]} == bad

    human = runner.invoke(cli.app, ["subscribers", "import", str(path)])
    assert "0 added, 294 already known, 6 refused, 0 confirmation emails queued" in human.stdout

    out = cli_env / "out.csv"
    result = runner.invoke(cli.app, ["subscribers", "export", "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("email,name,topics,cadence") and len(lines) == 295
    to_stdout = runner.invoke(cli.app, ["subscribers", "export", "--status", "active"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout.splitlines()[1:] == []
