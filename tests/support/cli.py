"""Running the ``mailer`` command line in tests, on a data folder of the test's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mailer import cli, db
from mailer.config import get_settings


def reset_caches() -> None:
    """Settings, the CLI's service and the engine are cached per process: start afresh."""
    get_settings.cache_clear()
    cli.service.cache_clear()
    db.reset_engine(close=True)


def use_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean MAILER_* environment on an embedded data folder, with no broker needed."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("MAILER_DATA_DIR", str(data))
    monkeypatch.setenv("MAILER_DISPATCHER", "mailer.dispatch:NullDispatcher")
    monkeypatch.setenv("MAILER_SECRET_KEYS", "test-secret")
    monkeypatch.setenv("MAILER_HASH_KEY", "test-hash-key")
    reset_caches()
    try:
        yield data
    finally:
        reset_caches()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def first_line(result: Result) -> str:
    return result.stdout.splitlines()[0].strip()
