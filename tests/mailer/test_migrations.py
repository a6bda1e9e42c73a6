"""The Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from mailer.migrate import upgrade
from mailer.models import Base
from tests.support.stack import create_pg_database, drop_pg_database, need_service, pg_admin_url


def drift(url: str) -> list[object]:
    upgrade(url)
    upgrade(url)  # running it again changes nothing
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
