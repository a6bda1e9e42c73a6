"""Workers killed while sending: SIGKILL again and again, and a deploy's SIGTERM.

Quick mode (CI): 2,000 readers and 5 kills; MAILER_TEST_FULL=1: 10,000 readers and 8 kills.
Each kill takes a worker's whole process group (main process and both children) while the
edition is sending, alternately at the worst moment (a message accepted by the server, not yet
recorded) and at a seeded random one; a new worker starts each time.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.conftest import scenario_timeout
from tests.faults.scenarios import FULL, sigkill_workers, sigterm_worker, sizes
from tests.support.services import require

SIZE = sizes(FULL)
CONCURRENCY = 2  # build_stack's worker concurrency: processes that can die mid-send per kill


@scenario_timeout
def test_repeated_sigkills_lose_nobody_and_duplicate_at_most_one_per_killed_process(
    tmp_path: Path,
) -> None:
    figures = require(lambda: sigkill_workers(tmp_path))
    # Every problem the audit found: lost readers, rows recorded sent that never arrived,
    # duplicates over the bound or with a different Message-ID, stuck leases, open rows.
    assert figures.problems == []
    assert figures.injected == SIZE.kills
    assert figures.delivered == SIZE.kill_readers and figures.lost == 0
    assert figures.duplicated <= figures.injected * CONCURRENCY == figures.allowed
    # Half the kills hit a message the server accepted but the worker had not recorded: each
    # of those readers got a second copy (same Message-ID, checked by the audit), no more.
    worst = figures.measures["kills_at_the_worst_moment"]
    assert worst >= SIZE.kills // 2
    assert figures.duplicated >= worst


@scenario_timeout
def test_sigterm_during_an_edition_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    figures = require(lambda: sigterm_worker(tmp_path))
    assert figures.problems == []
    assert figures.injected == 1
    assert figures.delivered == SIZE.sigterm_readers
    assert (figures.lost, figures.duplicated) == (0, 0)
