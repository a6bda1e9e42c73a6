"""The built-in SMTP sink: the embedded default's mail server (DESIGN §2, "Embedded default").

A newcomer sees every email without a mail client. Each message is stored byte-exact, as the
server received it, in ``<dir>/<UTC timestamp>-<short uuid>.eml``; its envelope (which a
message's headers do not tell: VERP sender, actual recipients) goes to a ``.json`` sidecar of
the same name. Both are written atomically, the sidecar first, so a listed ``.eml`` always
has its envelope and never shows half a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)

SERVER_HOSTNAME = "mailer-sink.localhost"
_STAMP = "%Y%m%dT%H%M%S.%fZ"  # sorts lexically in time order


def _write_atomic(path: Path, data: bytes) -> None:
    # Readers (the admin UI, tests) must never see a partial file, hence a temporary name in
    # the same directory and os.replace. No fsync: the sink is for looking, not for keeping.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SinkHandler:
    """aiosmtpd handler that stores every message in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._last = datetime.min.replace(tzinfo=UTC)

    def _now(self) -> datetime:
        # Strictly increasing, so names (and list_messages) keep arrival order even when
        # two messages arrive within one clock tick.
        now = datetime.now(UTC)
        self._last = now if now > self._last else self._last + timedelta(microseconds=1)
        return self._last

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store the message and its envelope; a disk error asks the client to retry."""
        received = self._now()
        name = f"{received.strftime(_STAMP)}-{uuid.uuid4().hex[:8]}"
        sidecar = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "received_at": received.isoformat(),
        }
        try:
            # Blocking writes in the event loop on purpose: small files, and a thread hop per
            # message would cost more than the writes themselves.
            _write_atomic(
                self.directory / f"{name}.json",
                json.dumps(sidecar, ensure_ascii=False).encode("utf-8"),
            )
            _write_atomic(self.directory / f"{name}.eml", envelope.original_content)
        except OSError as exc:
            log.error("sink cannot store a message in %s: %s", self.directory, exc)
            return "451 4.3.0 cannot store the message right now"
        return f"250 2.0.0 OK stored as {name}.eml"


class TrackedSMTP(SMTP):
    """aiosmtpd's SMTP protocol, registered in ``live`` while its connection is open."""

    def __init__(self, live: set[SMTP], handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.live.discard(self)
        super().connection_lost(error)


class SinkController(Controller):
    """aiosmtpd's threaded Controller, plus port 0 and a clean stop.

    aiosmtpd connects to ``self.port`` once after binding to check the server works; with
    port 0 (an OS-chosen free port) that would fail, so the bound port is read back first.
    Its stop() closes the event loop with clients still connected, leaking their sockets:
    this one closes them first.
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.live: set[SMTP] = set()

    def factory(self) -> SMTP:
        return TrackedSMTP(self.live, self.handler, **self.SMTP_kwargs)

    def close_connections(self, *, abort: bool = False) -> None:
        """Close every client connection and wait until they are closed for real."""

        async def close_all() -> None:
            for protocol in list(self.live):
                transport = protocol.transport
                if abort and isinstance(transport, asyncio.Transport):
                    transport.abort()  # skips TLS's close_notify, which idle clients ignore
                elif transport is not None:
                    transport.close()
            for _ in range(500):  # close() only schedules it
                if not self.live:
                    break
                await asyncio.sleep(0.01)

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=10)

    def stop(self, no_assert: bool = False) -> None:
        self.close_connections(abort=True)
        super().stop(no_assert)

    def _trigger_server(self) -> None:
        sockets = getattr(self.server, "sockets", None)  # an asyncio.Server once bound
        if sockets:
            self.port = sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def start_sink(host: str, port: int, directory: Path) -> SinkController:
    """Start the sink in a background thread; ``.port`` is the bound port, ``.stop()`` ends it."""
    controller = SinkController(
        SinkHandler(directory),
        hostname=host,
        port=port,
        server_hostname=SERVER_HOSTNAME,
        enable_SMTPUTF8=True,  # readers with Arabic local parts; 8BITMIME is on by default
    )
    controller.start()
    log.info("SMTP sink listening on %s:%s, storing in %s", host, controller.port, directory)
    return controller


def run_sink(host: str, port: int, directory: Path, *, stop: threading.Event | None = None) -> None:
    """Run the sink until SIGTERM or SIGINT (or until ``stop`` is set), then shut it down."""
    serve_until_stopped(start_sink(host, port, directory), stop)


def serve_until_stopped(controller: Any, stop: threading.Event | None = None) -> None:
    """Block until SIGTERM or SIGINT (or ``stop``), then stop the aiosmtpd ``controller``."""
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        stop.wait()
    finally:
        controller.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def list_messages(directory: Path) -> list[Path]:
    """The stored ``.eml`` files, oldest first (their names start with the arrival time)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.eml") if not p.name.startswith("."))


def read_envelope(message: Path) -> dict[str, Any]:
    """The envelope sidecar of a stored message: ``mail_from``, ``rcpt_tos``, ``received_at``."""
    envelope: dict[str, Any] = json.loads(message.with_suffix(".json").read_text("utf-8"))
    return envelope
