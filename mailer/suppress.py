"""Suppressions: addresses that must never be mailed again (hard bounces, complaints, erasure).

Matched on a keyed hash of the case-folded address, so a reader who asked to be forgotten
stays suppressed without their address being kept in clear.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from mailer.addresses import address_hash, normalise
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
