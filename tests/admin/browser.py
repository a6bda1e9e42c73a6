"""A live admin for browser tests: the real web app under uvicorn, real workers, the real sink.

:func:`start_live` builds the embedded stack of ``tests.support.stack`` (SQLite file, the
filesystem broker, Celery worker processes) whose SMTP server is the built-in sink
(:mod:`mailer.sink`), so the outbox page shows what the workers sent. The app is
:func:`mailer.web.create_app` served by uvicorn in a thread on a free port. Its dispatcher is
the Celery one bound to the stack's broker (the default reads the process environment, which
is not the stack's).

Chromium is Debian's (``/usr/bin/chromium``): Playwright's own download does not work here.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from mailer.config import Settings
from mailer.sink import SinkController, start_sink
from mailer.web import create_app
from tests.support.stack import IN_CI, Stack, build_stack, teardown_stack
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

#: The stack the app's dispatcher publishes to (the app loads it by import path, without args).
_BOUND: list[Settings] = []


class StackDispatcher(CeleryDispatcher):
    """The Celery dispatcher, bound to the broker of the live stack."""

    def __init__(self) -> None:
        super().__init__(make_celery(_BOUND[-1]))


def need_chromium() -> None:
    """Skip without Debian's Chromium on a developer's machine; fail under CI=true."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Live:
    stack: Stack
    sink: SinkController
    server: uvicorn.Server
    thread: threading.Thread
    url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def start_worker(self) -> None:
        if not any(proc.poll() is None for proc in self.stack.workers):
            self.stack.start_worker()

    def stop_workers(self) -> None:
        self.stack.stop_workers()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        teardown_stack(self.stack)
        self.sink.stop()


def start_live(tmp: Path) -> Live:
    sink_dir = (tmp / "data" / "sink").resolve()
    sink = start_sink("127.0.0.1", 0, sink_dir)
    stack = build_stack(
        "sqlite", tmp, smtp_url=f"smtp://127.0.0.1:{sink.port}?timeout=5&connect_timeout=5"
    )
    assert stack.settings.sink_dir == sink_dir
    _BOUND.append(stack.settings)
    web = stack.settings.model_copy(update={"dispatcher": f"{__name__}:StackDispatcher"})
    port = free_port()
    config = uvicorn.Config(
        create_app(web), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="admin-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return Live(stack, sink, server, thread, f"http://127.0.0.1:{port}")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
