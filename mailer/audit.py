"""The audit log: who changed what, and when.

Every state change made through the API or the operator commands records one event. Write it
in the same transaction as the change where the caller owns that transaction, so the log and
the data cannot disagree.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from mailer.models import AuditEvent, utcnow


def record(
    session_or_conn: Session | Connection,
    actor: str,
    action: str,
    target: str = "",
    details: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """Add one event (``action`` like ``edition.pause``, ``target`` like ``edition:12``)."""
    session_or_conn.execute(
        insert(AuditEvent).values(
            actor=actor[:200],
            action=action[:100],
            target=target[:200],
            details=dict(details or {}),
            created_at=now or utcnow(),
        )
    )


def cli_actor() -> str:
    """The actor name of a command run from a shell."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return f"cli:{user}"


def recent(
    session: Session, *, limit: int = 100, before_id: int | None = None, action: str | None = None
) -> list[AuditEvent]:
    """Newest first, keyset-paged by id."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))
