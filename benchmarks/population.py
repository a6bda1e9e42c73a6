"""Readers in bulk: a million active subscribers in seconds, with COPY and INSERT … SELECT.

Addresses are spread over a thousand domains (``reader<N>@d<N mod 1000>.example.net``) so that a
per-domain limit never decides a result. Each reader's ``email_hash`` is the real keyed hash,
so suppressions and unsubscribes behave as in production. Reader *n* is the n-th subscriber
row; a subscription covers the first ``count`` readers of the population.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from benchmarks.env import libpq_url
from mailer.addresses import address_hash
from mailer.config import Settings

COLUMNS = (
    "email, email_hash, name, locale, timezone, status, needs_smtputf8, bounce_score, "
    "consent_at, consent_source, confirmed_at, created_at, updated_at"
)


def email(n: int) -> str:
    return f"reader{n}@d{n % 1000}.example.net"


def load_readers(settings: Settings, count: int) -> None:
    """Add ``count`` active readers (``reader1`` … ``reader<count>``)."""
    now = datetime.now(UTC)
    key = settings.hash_key
    with psycopg.connect(libpq_url(settings.database)) as conn:
        with conn.cursor().copy(f"COPY subscribers ({COLUMNS}) FROM STDIN") as copy:
            for n in range(1, count + 1):
                address = email(n)
                copy.write_row(
                    (
                        address,
                        address_hash(address, key),
                        "قارئ",
                        "ar",
                        "Africa/Cairo",
                        "active",
                        False,
                        0.0,
                        now,
                        "benchmark",
                        now,
                        now,
                        now,
                    )
                )
        conn.execute("ANALYZE subscribers")


def subscribe(settings: Settings, topic_id: int, cadence: str, count: int) -> None:
    """Subscribe the first ``count`` readers to the topic at ``cadence``."""
    with psycopg.connect(libpq_url(settings.database)) as conn:
        conn.execute(
            """
            INSERT INTO subscriptions (subscriber_id, topic_id, cadence, created_at)
            SELECT id, %s, %s, now() FROM subscribers ORDER BY id LIMIT %s
            """,
            (topic_id, cadence, count),
        )
        conn.execute("ANALYZE subscriptions")
