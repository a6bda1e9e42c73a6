"""Fixtures of the admin UI tests (see :mod:`tests.admin.world`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.world import AdminWorld, make_template, make_world


@pytest.fixture(scope="session")
def admin_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database with users, copied for every world (migrating is slow)."""
    path = tmp_path_factory.mktemp("admin-template") / "mailer.db"
    make_template(path)
    return path


@pytest.fixture
def world(tmp_path: Path, admin_template: Path) -> Iterator[AdminWorld]:
    built = make_world(admin_template, tmp_path)
    try:
        yield built
    finally:
        built.close()
