"""Shared by the fault tests: the run's size and a per-test time limit that fits it."""

from __future__ import annotations

import pytest

from tests.faults.scenarios import FULL

#: Scenarios with real workers: minutes at the issue's sizes, well under one in quick mode.
scenario_timeout = pytest.mark.timeout(1200 if FULL else 300)
