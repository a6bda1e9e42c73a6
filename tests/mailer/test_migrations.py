"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from mailer.migrate import alembic_config, upgrade
from mailer.models import Base
from tests.support.stack import create_pg_database, drop_pg_database, need_service, pg_admin_url


def deliveries_shape(url: str) -> tuple[int, str, bool]:
    """How many foreign keys deliveries has, the due index's predicate (if any), and whether
    it has an index on subscriber_id alone."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            schema = inspect(conn)
            indexes = schema.get_indexes("deliveries")
            due = next(i for i in indexes if i["name"] == "ix_deliveries_due")
            where = due.get("dialect_options", {}).get(f"{conn.dialect.name}_where")
            by_reader = any(i["column_names"] == ["subscriber_id"] for i in indexes)
            foreign_keys = len(schema.get_foreign_keys("deliveries"))
            return foreign_keys, "" if where is None else str(where), by_reader
    finally:
        engine.dispose()


def drift(url: str) -> list[object]:
    upgrade(url)
    upgrade(url)  # running it again changes nothing
    assert deliveries_shape(url)[0] == 0
    # 0004 and 0005 go back and forth without losing anything.
    command.downgrade(alembic_config(url), "0003")
    assert deliveries_shape(url) == (2, "", True)
    upgrade(url)
    foreign_keys, where, by_reader = deliveries_shape(url)
    assert foreign_keys == 0 and "deferred" in where and not by_reader
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    assert drift(f"sqlite:///{tmp_path / 'schema.db'}") == []


def test_postgresql_schema_matches_the_models() -> None:
    need_service("PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close())
    url = create_pg_database()
    try:
        assert drift(url) == []
    finally:
        drop_pg_database(url)
