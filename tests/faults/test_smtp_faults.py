"""SMTP faults from a fault-injecting server, end to end through real workers.

Every n-th message meets the fault on its first attempt; one reader meets it on every attempt
(except for the slow reply, which is no fault for a client that waits) and must end failed with
the reason. No worker may hold on to a faulted message past its 2 s timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import scenario_timeout
from tests.faults.scenarios import DOOMED, FULL, SLACK, SMTP_FAULTS, SMTP_TIMEOUT, sizes, smtp_fault
from tests.support.faulty_smtp import Fault
from tests.support.services import require

SIZE = sizes(FULL)


@scenario_timeout
@pytest.mark.parametrize("fault", list(SMTP_FAULTS), ids=lambda f: f.name.lower())
def test_every_reader_ends_sent_or_failed_with_its_reason(tmp_path: Path, fault: Fault) -> None:
    figures = require(lambda: smtp_fault(tmp_path, fault))
    # The audit's problems include: a faulted message held past the timeout (a stuck worker),
    # the always-faulted reader not failed with the fault's reason, a slow reply given up on.
    assert figures.problems == []
    assert figures.injected >= 3, "the plan injected too few faults to prove anything"
    assert (figures.lost, figures.duplicated) == (0, 0)
    _, doomed = SMTP_FAULTS[fault]
    assert figures.failed == (1 if doomed else 0), DOOMED
    assert figures.delivered == SIZE.smtp_readers - figures.failed
    assert figures.measures["longest_held_s"] <= SMTP_TIMEOUT + SLACK
