"""Fixtures of the hostile-input tests: newsrooms on a real SQLite file (see :mod:`.harness`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.harness import Newsroom


@pytest.fixture(scope="module")
def newsroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newsroom]:
    """One newsroom per test module: Hypothesis examples share it (each adds its own rows)."""
    built = Newsroom(tmp_path_factory.mktemp("newsroom"))
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def make_room(tmp_path: Path) -> Iterator[Callable[..., Newsroom]]:
    """Newsrooms of this test's own (``Newsroom`` options), closed after it."""
    made: list[Newsroom] = []

    def make(**options: Any) -> Newsroom:
        made.append(Newsroom(tmp_path / f"room{len(made)}", **options))
        return made[-1]

    yield make
    for room in made:
        room.close()
