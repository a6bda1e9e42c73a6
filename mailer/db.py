"""Engines and sessions for SQLite (embedded) and PostgreSQL (production).

Engines are created lazily and per process: a forked worker must call :func:`reset_engine`
(``worker_process_init``) so that it never shares a connection with its parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import get_settings

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, fast_commit: bool = False, pool_size: int = 10) -> Engine:
    """An engine tuned for several writing processes.

    SQLite gets WAL, a long busy timeout and ``BEGIN IMMEDIATE`` (a deferred transaction that
    later writes fails with "database is locked" instead of waiting). On PostgreSQL,
    ``fast_commit`` turns off ``synchronous_commit``: the worker commits once per message, and
    losing the last few commits in a server crash only re-sends those messages.
    ``pool_size`` connections stay open, and as many again may open for a burst.
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
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
    )


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
