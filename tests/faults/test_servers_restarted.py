"""Redis and PostgreSQL restarted mid-edition (servers of the test's own: the shared ones are
never touched). The edition completes, nobody is lost, no lease is left stuck."""

from __future__ import annotations

from pathlib import Path

from tests.faults.conftest import scenario_timeout
from tests.faults.scenarios import FULL, postgres_restart, redis_restart, sizes
from tests.support.services import require

SIZE = sizes(FULL)


@scenario_timeout
def test_redis_crashed_flushed_and_restarted_mid_edition_loses_nothing(tmp_path: Path) -> None:
    figures = require(lambda: redis_restart(tmp_path))
    assert figures.problems == []  # includes: edition "sent", no row left "sending" or leased
    assert figures.injected == SIZE.redis_restarts
    assert figures.delivered == SIZE.redis_readers
    # Only wake-ups live in Redis: losing them all sends nobody twice.
    assert (figures.lost, figures.duplicated) == (0, 0)


@scenario_timeout
def test_postgresql_restarted_mid_edition_completes_it(tmp_path: Path) -> None:
    figures = require(lambda: postgres_restart(tmp_path))
    assert figures.problems == []  # includes: edition "sent", no row left "sending" or leased
    assert figures.injected == SIZE.pg_restarts
    assert figures.delivered == SIZE.pg_readers and figures.lost == 0
    # A message accepted just before the restart cut its commit is sent again, with the same
    # Message-ID: at most one per sending process per restart.
    assert figures.duplicated <= figures.allowed == SIZE.pg_restarts * 2
