"""The production app factory's process-level settings."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
from fastapi.testclient import TestClient

from mailer.web import create_app
from tests.api.conftest import api_settings, copy_database


def test_request_handlers_get_the_configured_number_of_threads(
    tmp_path: Path, migrated: Path
) -> None:
    copy_database(migrated, tmp_path / "mailer.db")
    settings = api_settings(tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}", web_threads=3)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json()["database"] is True
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens
        )
    assert tokens == 3  # not anyio's 40: fewer threads hand the GIL around less
