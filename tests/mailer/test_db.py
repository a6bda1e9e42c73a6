"""Pooled PostgreSQL connections: checked before use when idle, not on every checkout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from mailer.db import make_engine
from tests.support.stack import PG_URL, need_service


@pytest.fixture
def engine() -> Iterator[Engine]:
    need_service("PostgreSQL", lambda: psycopg.connect(PG_URL.replace("+psycopg", "")).close())
    made = make_engine(PG_URL, ping_after_idle=0.3)
    yield made
    made.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_backend_pid()")))


def test_a_connection_dropped_while_idle_is_replaced_not_failed(engine: Engine) -> None:
    first = backend_pid(engine)
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    time.sleep(0.4)  # past ping_after_idle: the next checkout pings and reconnects
    assert backend_pid(engine) != first


def test_a_connection_reused_at_once_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or real_ping(c))
    backend_pid(engine)  # a new connection: never returned yet, so pinged
    assert len(pings) == 1
    for _ in range(5):  # back to back, as under load: a round trip saved each time
        backend_pid(engine)
    assert len(pings) == 1
    time.sleep(0.4)
    backend_pid(engine)
    assert len(pings) == 2
