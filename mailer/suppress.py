"""Suppressions: addresses that must never be mailed again (hard bounces, complaints, erasure).

Matched on a keyed hash of the case-folded address, so a reader who asked to be forgotten
stays suppressed without their address being kept in clear. Planning and every batch claim
check the hash (:func:`mailer.editions.eligible`), so a suppression added here is honoured by
the next batch of an edition already sending.

The CLI (``mailer suppressions``) and the JSON API share the functions below.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, Engine, Row, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from mailer.addresses import InvalidAddress, address_hash, normalise
from mailer.config import Settings
from mailer.models import Suppression, utcnow


def hash_for(email: str, settings: Settings) -> str:
    """The keyed hash that subscribers and suppressions share for one address."""
    return address_hash(normalise(email).key, settings.hash_key)


def suppress_address(
    conn: Connection, email: str, reason: str, source: str, settings: Settings
) -> None:
    """Add a suppression; adding one that exists changes nothing."""
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert_(Suppression)
        .values(
            email_hash=hash_for(email, settings),
            email=email,
            reason=reason,
            source=source,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["email_hash"])
    )


REASON_MAX = 32  # the column's width


@dataclass(frozen=True)
class SuppressionRow:
    """One suppression as the CLI and the API show it; ``email`` is None once erased."""

    id: int
    email: str | None
    reason: str
    source: str
    created_at: datetime


@dataclass
class SuppressionImport:
    """What an import did: ``errors`` holds (line, reason) for every refused line."""

    read: int = 0
    added: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def _row(found: Row[int, str | None, str, str, datetime]) -> SuppressionRow:
    return SuppressionRow(found.id, found.email, found.reason, found.source, found.created_at)


_COLUMNS = (
    Suppression.id,
    Suppression.email,
    Suppression.reason,
    Suppression.source,
    Suppression.created_at,
)


def check_reason(reason: str) -> str:
    """A reason is a short label (``manual``, ``hard_bounce``, ``complaint``…)."""
    reason = reason.strip()
    if not reason or len(reason) > REASON_MAX or not reason.isprintable():
        raise ValueError(f"the reason must be 1 to {REASON_MAX} printable characters")
    return reason


def get_suppression(conn: Connection, email: str, settings: Settings) -> SuppressionRow | None:
    """The suppression of ``email`` (any case), or None. Raises InvalidAddress."""
    found = conn.execute(
        select(*_COLUMNS).where(Suppression.email_hash == hash_for(email, settings))
    ).first()
    return _row(found) if found else None


def add_suppression(
    conn: Connection,
    email: str,
    settings: Settings,
    *,
    reason: str = "manual",
    source: str = "",
) -> tuple[SuppressionRow, bool]:
    """Suppress ``email``; returns the row and whether it is new (an existing one is kept as
    it is, with its first reason). Raises InvalidAddress or ValueError (reason)."""
    address = normalise(email)
    reason = check_reason(reason)
    existing = get_suppression(conn, address.email, settings)
    if existing is not None:
        return existing, False
    suppress_address(conn, address.email, reason, source[:200], settings)
    row = get_suppression(conn, address.email, settings)
    assert row is not None
    return row, True


def remove_suppression(conn: Connection, email: str, settings: Settings) -> bool:
    """Lift the suppression of ``email`` (any case); False if there was none.

    The reader's own status (bounced, complained, unsubscribed) is not touched: being allowed
    to receive mail again is not the same as having asked for it.
    """
    result = conn.execute(
        delete(Suppression).where(Suppression.email_hash == hash_for(email, settings))
    )
    return bool(result.rowcount)


def _search(search: str | None, settings: Settings | None) -> ColumnElement[bool] | None:
    text = (search or "").strip()
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    condition: ColumnElement[bool] = Suppression.email.ilike(f"%{escaped}%", escape="\\")
    if settings is not None and "@" in text:
        # A whole address also finds its erased suppression, by hash.
        with contextlib.suppress(InvalidAddress):
            condition = or_(condition, Suppression.email_hash == hash_for(text, settings))
    return condition


def list_suppressions(
    conn: Connection,
    limit: int = 50,
    offset: int = 0,
    search: str | None = None,
    *,
    settings: Settings | None = None,
) -> list[SuppressionRow]:
    """Newest first; ``search`` is a case-insensitive part of the address (with ``settings``,
    a whole address also matches an erased entry by its hash)."""
    query = select(*_COLUMNS).order_by(Suppression.id.desc()).limit(limit).offset(offset)
    condition = _search(search, settings)
    if condition is not None:
        query = query.where(condition)
    return [_row(found) for found in conn.execute(query)]


def count_suppressions(
    conn: Connection, search: str | None = None, *, settings: Settings | None = None
) -> int:
    query = select(func.count()).select_from(Suppression)
    condition = _search(search, settings)
    if condition is not None:
        query = query.where(condition)
    return conn.scalar(query) or 0


def read_addresses(path: Path) -> Iterator[tuple[int, str]]:
    """(line, address) from a CSV with an ``email`` column, or one address per line.

    Blank lines and lines starting with ``#`` are skipped. Undecodable bytes become U+FFFD,
    so that such a line is refused with its number rather than stopping the whole import.
    """
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        column: int | None = None
        for cells in reader:
            if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                continue
            if column is None:
                names = [cell.strip().lower() for cell in cells]
                column = names.index("email") if "email" in names else 0
                if "email" in names:
                    continue  # a header row
            value = cells[column].strip() if column < len(cells) else ""
            yield reader.line_num, value


def import_suppressions(
    engine: Engine,
    path: Path,
    settings: Settings,
    reason: str = "import",
    *,
    source: str | None = None,
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> SuppressionImport:
    """Suppress every address of ``path`` (see :func:`read_addresses`), streaming.

    One transaction per ``chunk`` addresses: a 1M-line file never sits in memory, and an
    interruption leaves whole chunks imported (running it again adds only what is missing).
    """
    reason = check_reason(reason)
    source = (source or f"import:{path.name}")[:200]
    insert_ = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    report = SuppressionImport()
    pending: dict[str, str] = {}  # hash -> normalised address

    def flush() -> None:
        if not pending:
            return
        now = utcnow()
        with engine.begin() as conn:
            known = set(
                conn.scalars(
                    select(Suppression.email_hash).where(Suppression.email_hash.in_(list(pending)))
                )
            )
            values = [
                {"email_hash": digest, "email": email, "reason": reason, "source": source}
                | {"created_at": now}
                for digest, email in pending.items()
                if digest not in known
            ]
            if values:
                conn.execute(
                    insert_(Suppression).on_conflict_do_nothing(index_elements=["email_hash"]),
                    values,
                )
        report.added += len(values)
        report.existing += len(pending) - len(values)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for line, raw in read_addresses(path):
        report.read += 1
        if "\ufffd" in raw:  # email-validator would take U+FFFD for a letter
            report.errors.append((line, "not UTF-8 text"))
            continue
        try:
            address = normalise(raw)
        except InvalidAddress as exc:
            report.errors.append((line, f"invalid address {raw!r}: {exc}"))
            continue
        digest = address_hash(address.key, settings.hash_key)
        if digest in pending:  # the same reader twice in one chunk
            report.existing += 1
            continue
        pending[digest] = address.email
        if len(pending) >= chunk:
            flush()
    flush()
    return report
