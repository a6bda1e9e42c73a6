"""Fixtures every test reuses: a whole stack per backend, and the scale of end-to-end runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import use_data_dir
from tests.support.stack import Stack, build_stack, teardown_stack

#: End-to-end sizes: CI runs hundreds of readers; MAILER_TEST_FULL=1 runs the issue's sizes.
FULL = os.environ.get("MAILER_TEST_FULL", "") == "1"


def scale(ci: int, full: int) -> int:
    return full if FULL else ci


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For CLI tests: a clean MAILER_* environment on the test's own data folder."""
    yield from use_data_dir(tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    built = build_stack(request.param, tmp_path)
    try:
        yield built
    finally:
        teardown_stack(built)
