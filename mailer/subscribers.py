"""Readers in bulk and one at a time: validated, normalised, de-duplicated by keyed hash.

Imports stream: rows are read lazily and written one chunk per transaction, so a 100k-row file
never sits in memory and a failure never leaves a chunk half-imported.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.addresses import InvalidAddress, address_hash, normalise
from mailer.config import Settings
from mailer.models import (
    Cadence,
    Subscriber,
    SubscriberStatus,
    Subscription,
    Suppression,
    Topic,
    utcnow,
)

DEFAULT_TOPICS = ("breaking",)
CHUNK = 1000


@dataclass(frozen=True)
class ReaderRow:
    line: int
    email: str
    name: str = ""
    topics: tuple[str, ...] = DEFAULT_TOPICS
    cadence: str = Cadence.INSTANT
    locale: str = "ar"
    timezone: str = "Africa/Cairo"


@dataclass
class ImportReport:
    read: int = 0
    added: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def read_csv(path: Path) -> Iterator[ReaderRow | tuple[int, str]]:
    """Rows of a subscribers CSV (DESIGN.md §6 columns), or (line, error) for a bad one."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "email" not in reader.fieldnames:
            raise ValueError(f"{path}: the header must have an 'email' column")
        for record in reader:
            line = reader.line_num
            email = (record.get("email") or "").strip()
            if not email:
                yield line, "empty email"
                continue
            topics = tuple(t.strip() for t in (record.get("topics") or "").split(";") if t.strip())
            cadence = (record.get("cadence") or Cadence.INSTANT).strip()
            if cadence not in tuple(Cadence):
                yield line, f"unknown cadence {cadence!r}"
                continue
            yield ReaderRow(
                line=line,
                email=email,
                name=(record.get("name") or "").strip()[:200],
                topics=topics or DEFAULT_TOPICS,
                cadence=cadence,
                locale=(record.get("locale") or "ar").strip()[:16],
                timezone=(record.get("timezone") or "Africa/Cairo").strip()[:64],
            )


def _insert(engine: Engine):  # type: ignore[no-untyped-def]
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def import_readers(
    engine: Engine,
    rows: Iterable[ReaderRow | tuple[int, str]],
    settings: Settings,
    *,
    consented: bool,
    source: str = "import",
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Add readers; existing addresses keep their status (an import never re-subscribes)."""
    report = ImportReport()
    with engine.connect() as conn:
        topic_ids = dict(conn.execute(select(Topic.slug, Topic.id)).all())
    pending: list[tuple[ReaderRow, str, bool, str]] = []

    def flush() -> None:
        if pending:
            _write_chunk(engine, pending, topic_ids, report, consented=consented, source=source)
            if progress is not None:
                progress(len(pending))
            pending.clear()

    for row in rows:
        report.read += 1
        if isinstance(row, tuple):
            report.errors.append(row)
            continue
        unknown = [t for t in row.topics if t not in topic_ids]
        if unknown:
            report.errors.append((row.line, f"unknown topic {unknown[0]!r}"))
            continue
        try:
            address = normalise(row.email)
        except InvalidAddress as exc:
            report.errors.append((row.line, f"invalid address: {exc}"))
            continue
        digest = address_hash(address.key, settings.hash_key)
        pending.append((row, address.email, address.needs_smtputf8, digest))
        if len(pending) >= chunk:
            flush()
    flush()
    return report


def _write_chunk(
    engine: Engine,
    pending: list[tuple[ReaderRow, str, bool, str]],
    topic_ids: dict[str, int],
    report: ImportReport,
    *,
    consented: bool,
    source: str,
) -> None:
    insert_ = _insert(engine)
    now = utcnow()
    status = SubscriberStatus.ACTIVE if consented else SubscriberStatus.PENDING
    with engine.begin() as conn:
        hashes = [digest for _, _, _, digest in pending]
        suppressed = set(
            conn.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes)))
        )
        fresh: dict[str, tuple[ReaderRow, str, bool, str]] = {}
        for item in pending:
            if item[3] in suppressed:
                report.errors.append((item[0].line, "address is suppressed"))
            else:
                fresh.setdefault(item[3], item)
        if not fresh:
            return
        values = [
            {
                "email": email,
                "email_hash": digest,
                "name": row.name,
                "locale": row.locale,
                "timezone": row.timezone,
                "status": status,
                "needs_smtputf8": smtputf8,
                "consent_at": now if consented else None,
                "consent_source": source,
                "confirmed_at": now if consented else None,
                "created_at": now,
                "updated_at": now,
            }
            for row, email, smtputf8, digest in fresh.values()
        ]
        added = (
            conn.execute(
                insert_(Subscriber)
                .on_conflict_do_nothing(index_elements=["email_hash"])
                .returning(Subscriber.email_hash),
                values,
            ).all()
            if engine.dialect.name == "postgresql"
            else None
        )
        if added is None:  # SQLite's executemany has no RETURNING: count before and after
            before = set(
                conn.scalars(select(Subscriber.email_hash).where(Subscriber.email_hash.in_(fresh)))
            )
            conn.execute(insert_(Subscriber).on_conflict_do_nothing(), values)
            added_count = len(fresh) - len(before)
        else:
            added_count = len(added)
        report.added += added_count
        report.existing += len(fresh) - added_count
        ids = dict(
            conn.execute(
                select(Subscriber.email_hash, Subscriber.id).where(Subscriber.email_hash.in_(fresh))
            ).all()
        )
        subscriptions = [
            {
                "subscriber_id": ids[digest],
                "topic_id": topic_ids[slug],
                "cadence": row.cadence,
                "created_at": now,
            }
            for digest, (row, _, _, _) in fresh.items()
            for slug in row.topics
        ]
        conn.execute(insert_(Subscription).on_conflict_do_nothing(), subscriptions)


def add_reader(
    engine: Engine,
    settings: Settings,
    email: str,
    *,
    name: str = "",
    topics: tuple[str, ...] = DEFAULT_TOPICS,
    cadence: str = Cadence.INSTANT,
    consented: bool = True,
    source: str = "cli",
) -> int:
    """Add one reader and return their id (raises InvalidAddress or ValueError)."""
    report = import_readers(
        engine,
        [ReaderRow(line=1, email=email, name=name, topics=topics, cadence=cadence)],
        settings,
        consented=consented,
        source=source,
    )
    if report.errors:
        raise ValueError(report.errors[0][1])
    digest = address_hash(normalise(email).key, settings.hash_key)
    with engine.connect() as conn:
        subscriber_id = conn.scalar(select(Subscriber.id).where(Subscriber.email_hash == digest))
    assert subscriber_id is not None
    return subscriber_id
