"""Readers in bulk and one at a time: validated, normalised, de-duplicated by keyed hash.

Imports stream: rows are read lazily and written one chunk per transaction, so a 100k-row file
never sits in memory and a failure never leaves a chunk half-imported. Readers imported
without ``consented`` are pending, and each new one gets a confirmation email queued in the
same transaction, on the bulk queue (so an import never delays an alert). Exports stream too,
in keyset chunks, one row per reader and cadence, in the import's own columns.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer import transactional
from mailer.addresses import InvalidAddress, address_hash, clean_name, normalise
from mailer.config import Settings
from mailer.dispatch import DIGESTS_QUEUE, Dispatcher
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
    confirmations: int = 0  # confirmation emails queued (readers imported without consent)


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, record) — or (line, error) for a record the csv module cannot read, so one bad
    record (a field over the size limit, bytes that are not UTF-8) never ends the import."""
    while True:
        before = reader.line_num
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader may fail before counting the record's first line: never report the
            # line before the record. Where the bad record ends is unknown, so reading on could
            # turn lines inside its quoted field into readers: stop, and say so.
            line = max(reader.line_num, before + 1)
            yield line, f"unreadable CSV record ({exc}); the file was not read past this line"
            return
        values = [v for v in record.values() if isinstance(v, str)]
        if any(_NOT_UTF8.search(v) for v in values):
            yield reader.line_num, "not UTF-8 text"
            continue
        yield reader.line_num, record


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of undecodable bytes


def read_csv(path: Path) -> Iterator[ReaderRow | tuple[int, str]]:
    """Rows of a subscribers CSV (DESIGN.md §6 columns), or (line, error) for a bad one."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        try:
            fields = reader.fieldnames
        except csv.Error as exc:
            raise ValueError(f"{path}: unreadable CSV header: {exc}") from exc
        if fields is None or "email" not in fields:
            raise ValueError(f"{path}: the header must have an 'email' column")
        for line, record in _records(reader):
            if isinstance(record, str):
                yield line, record
                continue
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
                name=clean_name(record.get("name") or ""),
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
    confirm: bool | None = None,
    dispatcher: Dispatcher | None = None,
    queue: str = DIGESTS_QUEUE,
) -> ImportReport:
    """Add readers; existing addresses keep their status (an import never re-subscribes).

    ``confirm`` (default: not ``consented``) queues a confirmation email on ``queue`` for each
    new reader, in the chunk's transaction; ``dispatcher`` wakes workers after each commit
    (without one, the sweeper does within ``stall_seconds``). ``progress`` is called with the
    number of rows of each chunk written.
    """
    report = ImportReport()
    confirm = not consented if confirm is None else confirm
    with engine.connect() as conn:
        topic_ids = dict(conn.execute(select(Topic.slug, Topic.id)).all())
    pending: list[tuple[ReaderRow, str, bool, str]] = []

    def flush() -> None:
        if pending:
            queued = _write_chunk(
                engine,
                pending,
                topic_ids,
                report,
                consented=consented,
                source=source,
                confirm_on=queue if confirm else None,
            )
            report.confirmations += len(queued)
            if queued and dispatcher is not None:
                dispatcher.dispatch_messages(queue, queued)  # after the chunk committed
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
    confirm_on: str | None,
) -> list[int]:
    """Write one chunk in one transaction; the ids of the confirmations it queued."""
    insert_ = _insert(engine)
    now = utcnow()
    status = SubscriberStatus.ACTIVE if consented else SubscriberStatus.PENDING
    with engine.begin() as conn:
        hashes = [digest for _, _, _, digest in pending]
        suppressed = set(
            conn.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes)))
        )
        accepted = []
        fresh: dict[str, tuple[ReaderRow, str, bool, str]] = {}
        for item in pending:
            if item[3] in suppressed:
                report.errors.append((item[0].line, "address is suppressed"))
            else:
                accepted.append(item)
                # A reader on several rows (one per cadence, as exports write them) is added
                # once, from their first row; every row adds its subscriptions.
                fresh.setdefault(item[3], item)
        if not fresh:
            return []
        values = [
            {
                "email": email,
                "email_hash": digest,
                "name": clean_name(row.name),
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
            new_hashes = set(fresh) - before
        else:
            new_hashes = {row.email_hash for row in added}
        added_count = len(new_hashes)
        report.added += added_count
        report.existing += len(accepted) - added_count
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
            for row, _, _, digest in accepted
            for slug in row.topics
        ]
        conn.execute(insert_(Subscription).on_conflict_do_nothing(), subscriptions)
        if confirm_on is None or consented:
            return []
        return transactional.enqueue_many(
            conn,
            transactional.CONFIRMATION,
            sorted(ids[digest] for digest in new_hashes),
            queue=confirm_on,
            now=lambda: now,
        )


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


EXPORT_COLUMNS = (
    "email",
    "name",
    "topics",
    "cadence",
    "locale",
    "timezone",
    "status",
    "consent_at",
    "consent_source",
    "confirmed_at",
)


def export_readers(
    engine: Engine, *, status: str | None = None, chunk: int = CHUNK
) -> Iterator[dict[str, Any]]:
    """Every reader as rows of :data:`EXPORT_COLUMNS`: one per reader and cadence (topics
    joined with ``;``), so the file imports back as it was; a reader with no subscription
    (unsubscribed) is one row with empty topics. Erased readers are not there.

    Streams in keyset chunks, each read in its own short transaction.
    """
    after = 0
    while True:
        query = (
            select(Subscriber)
            .where(Subscriber.id > after, Subscriber.email.is_not(None))
            .order_by(Subscriber.id)
            .limit(chunk)
        )
        if status is not None:
            query = query.where(Subscriber.status == status)
        with engine.connect() as conn:
            readers = conn.execute(query).all()
            if not readers:
                return
            choices: dict[tuple[int, str], list[str]] = {}
            for row in conn.execute(
                select(Subscription.subscriber_id, Subscription.cadence, Topic.slug)
                .join(Topic, Topic.id == Subscription.topic_id)
                .where(Subscription.subscriber_id.in_([r.id for r in readers]))
                .order_by(Subscription.subscriber_id, Topic.position, Topic.id)
            ):
                choices.setdefault((row.subscriber_id, row.cadence), []).append(row.slug)
        for reader in readers:
            base = {
                "email": reader.email,
                "name": reader.name,
                "locale": reader.locale,
                "timezone": reader.timezone,
                "status": reader.status,
                "consent_at": reader.consent_at.isoformat() if reader.consent_at else "",
                "consent_source": reader.consent_source or "",
                "confirmed_at": reader.confirmed_at.isoformat() if reader.confirmed_at else "",
            }
            cadences: list[str | None] = [c for c in Cadence if (reader.id, c) in choices]
            cadences = cadences or [None]
            for cadence in cadences:
                topics = ";".join(choices.get((reader.id, cadence), [])) if cadence else ""
                yield base | {"topics": topics, "cadence": cadence or ""}
        after = readers[-1].id


def write_csv(rows: Iterable[dict[str, Any]], handle: Any) -> int:
    """Write export rows as CSV with a header to a text ``handle``; returns the row count."""
    # CRLF (RFC 4180): the csv module then quotes any field holding a CR or an LF.
    writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
