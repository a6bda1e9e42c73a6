"""The built-in SMTP sink, fed by the real SmtpTransport over real connections."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mailer.sink import SinkController, list_messages, read_envelope, start_sink
from mailer.transport import Outcome, SmtpConfig, SmtpTransport

SENDER = "bounces+tok@news.example.com"


def message(n: int, body: str = "hello") -> bytes:
    return (
        f"From: news@example.com\r\nTo: r{n}@example.com\r\nSubject: test {n}\r\n"
        f"Message-ID: <{n}@news.example.com>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[SinkController, Path]]:
    directory = tmp_path / "sink"
    controller = start_sink("127.0.0.1", 0, directory)
    try:
        yield controller, directory
    finally:
        controller.stop()


@pytest.fixture
def transport(sink: tuple[SinkController, Path]) -> Iterator[SmtpTransport]:
    controller, _ = sink
    smtp = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{controller.port}"))
    try:
        yield smtp
    finally:
        smtp.close()


def test_messages_are_stored_byte_exact_with_their_envelope(
    sink: tuple[SinkController, Path], transport: SmtpTransport
) -> None:
    _, directory = sink
    sent = [
        message(1),
        message(2, "عاجل: خبر مهم\r\n.سطر يبدأ بنقطة\r\n..نقطتان"),
        message(3, "x" * 900),
    ]
    for n, data in enumerate(sent, 1):
        assert transport.send(SENDER, f"r{n}@example.com", data).outcome is Outcome.SENT

    stored = list_messages(directory)
    assert [p.read_bytes() for p in stored] == sent
    assert all(p.name.endswith(".eml") and len(p.stem.split("-")[-1]) == 8 for p in stored)
    envelope = read_envelope(stored[1])
    assert envelope["mail_from"] == SENDER and envelope["rcpt_tos"] == ["r2@example.com"]
    assert datetime.fromisoformat(envelope["received_at"]).utcoffset() is not None
    assert json.loads(stored[0].with_suffix(".json").read_text()) == read_envelope(stored[0])
    # Nothing but finished messages and their sidecars: no temporary files left behind.
    assert sorted(p.suffix for p in directory.iterdir()) == [".eml"] * 3 + [".json"] * 3


def test_smtputf8_reader_is_received(
    sink: tuple[SinkController, Path], transport: SmtpTransport
) -> None:
    _, directory = sink
    reader = "قارئ@مثال.مصر"
    result = transport.send(SENDER, reader, message(1, "مرحبا"), smtputf8=True)
    assert result.outcome is Outcome.SENT
    (stored,) = list_messages(directory)
    assert read_envelope(stored)["rcpt_tos"] == [reader]


def test_many_messages_over_one_connection_are_all_stored_in_order(
    sink: tuple[SinkController, Path], transport: SmtpTransport
) -> None:
    _, directory = sink
    started = time.monotonic()
    for n in range(200):
        assert transport.send(SENDER, f"r{n}@example.com", message(n)).outcome is Outcome.SENT
    elapsed = time.monotonic() - started

    stored = list_messages(directory)
    assert len(stored) == 200 and transport.connections == 1
    assert [p.read_bytes() for p in stored] == [message(n) for n in range(200)]
    assert elapsed < 10  # typically ~0.1 s: the sink keeps up with a worker


def test_a_sink_that_cannot_write_asks_the_client_to_retry(
    sink: tuple[SinkController, Path], transport: SmtpTransport
) -> None:
    _, directory = sink
    shutil.rmtree(directory)
    directory.write_text("not a directory")

    result = transport.send(SENDER, "r@example.com", message(1))
    assert (result.outcome, result.code) == (Outcome.TEMPORARY, 451)


def test_list_messages(tmp_path: Path) -> None:
    assert list_messages(tmp_path / "missing") == []
    for name in ["20260102T000000.000000Z-bbbb.eml", "20260101T000000.000000Z-cccc.eml"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".20260103T000000.000000Z-dddd.eml.tmp").write_bytes(b"partial")
    (tmp_path / "20260101T000000.000000Z-cccc.json").write_text("{}")
    assert [p.name[:8] for p in list_messages(tmp_path)] == ["20260101", "20260102"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_run_sink_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    code = (
        "from pathlib import Path; from mailer.sink import run_sink; "
        f"run_sink('127.0.0.1', {port}, Path({str(tmp_path)!r}))"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, env={**os.environ})
    try:
        deadline = time.monotonic() + 10
        transport = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{port}"))
        result = transport.send(SENDER, "r@example.com", message(1))
        while result.outcome is not Outcome.SENT and time.monotonic() < deadline:
            time.sleep(0.05)  # still starting
            result = transport.send(SENDER, "r@example.com", message(1))
        transport.close()
        assert result.outcome is Outcome.SENT
        assert len(list_messages(tmp_path)) == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_closes_connected_clients(tmp_path: Path) -> None:
    controller = start_sink("127.0.0.1", 0, tmp_path)
    transport = SmtpTransport(SmtpConfig.from_url(f"smtp://127.0.0.1:{controller.port}"))
    try:
        assert transport.send(SENDER, "r@example.com", message(1)).outcome is Outcome.SENT
        controller.stop()  # with the client still connected: nothing leaks, nothing hangs
        assert not controller.live
        result = transport.send(SENDER, "r@example.com", message(2))
        assert result.outcome is Outcome.TEMPORARY and "refused" in result.text
    finally:
        transport.close()
