"""The same edition triggered twice at the same instant, from two threads with their own
engines, on PostgreSQL and on SQLite: exactly one delivery per reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.races import KNOWN_BUGS, concurrent_trigger
from tests.faults.scenarios import FULL, sizes
from tests.support.services import require

SIZE = sizes(FULL)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
@pytest.mark.parametrize("kind", ["alert", "scheduled digest", "digest"])
def test_two_simultaneous_triggers_deliver_exactly_once_per_reader(
    tmp_path: Path, backend: str, kind: str, request: pytest.FixtureRequest
) -> None:
    if (backend, kind) in KNOWN_BUGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[backend, kind]))
    figures = require(lambda: concurrent_trigger(tmp_path, backend, kind, SIZE.race_readers))
    assert figures.problems == []
    assert figures.delivered == SIZE.race_readers
    assert (figures.lost, figures.duplicated) == (0, 0)
