"""Engines and sessions for SQLite (embedded) and PostgreSQL (production).

Engines are created lazily and per process: a forked worker must call :func:`reset_engine`
(``worker_process_init``) so that it never shares a connection with its parent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import get_settings

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str, *, fast_commit: bool = False, pool_size: int = 10, ping_after_idle: float = 0.0
) -> Engine:
    """An engine tuned for several writing processes.

    SQLite gets WAL, a long busy timeout and ``BEGIN IMMEDIATE`` (a deferred transaction that
    later writes fails with "database is locked" instead of waiting). On PostgreSQL,
    ``fast_commit`` turns off ``synchronous_commit``: the worker commits once per message, and
    losing the last few commits in a server crash only re-sends those messages.
    ``pool_size`` connections stay open, and as many again may open for a burst.

    A connection is checked with a round trip before it is handed out, so one the server
    dropped (a restart, an idle timeout) is replaced instead of failing the caller. With
    ``ping_after_idle`` only a connection idle that many seconds is: the web app's, where the
    ping was a tenth of a sign-up's cost and a connection reused within a second is alive.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    connect_args: dict[str, Any] = {}
    if fast_commit:
        connect_args["options"] = "-c synchronous_commit=off"
    engine = create_engine(
        url,
        pool_pre_ping=not ping_after_idle,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
    )
    if ping_after_idle:
        _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: Engine, seconds: float) -> None:
    """SQLAlchemy's pessimistic disconnect handling, for connections idle ``seconds`` or more:
    a failed ping raises DisconnectionError, and the pool then opens a new connection."""

    @event.listens_for(engine.pool, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("returned_at", -seconds) < seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs
        except Exception as exc:
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


def get_engine() -> Engine:
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        _engine = make_engine(
            settings.database, fast_commit=True, pool_size=settings.database_pool_size
        )
        _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def reset_engine(*, close: bool = False) -> None:
    """Forget the engine: after a fork (``close=False``: the parent still uses the connections)
    or when the configuration changed (``close=True``)."""
    global _engine, _sessionmaker
    if _engine is not None:
        _engine.dispose(close=close)
    _engine = None
    _sessionmaker = None


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    get_engine()
    assert _sessionmaker is not None
    session = _sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
