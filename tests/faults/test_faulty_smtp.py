"""The fault-injecting server does what the fault tests rely on, seen from the product's own
SMTP client: each fault arrives as described, and what it records is what happened."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mailer.transport import Outcome, SmtpConfig, SmtpTransport
from tests.support.faulty_smtp import (
    Fault,
    FaultySMTPServer,
    combine,
    every_nth,
    for_recipients,
)

MESSAGE = (
    b"Message-ID: <fixed.1@example.com>\r\nSubject: test\r\n\r\n"
    + b".starts with a dot\r\n" * 2000  # about 40 KB: reset mid-DATA cuts it short
)
PLAN = combine(
    for_recipients(["hang@example.com"], Fault.HANG_AFTER_DATA),
    for_recipients(["reset@example.com"], Fault.RESET_MID_DATA),
    for_recipients(["slow@example.com"], Fault.SLOW_REPLY),
    for_recipients(["shut@example.com"], Fault.REPLY_421_CLOSE, until_attempt=1),
)


@pytest.fixture(params=["bdat", "data"])
def server(request: pytest.FixtureRequest) -> Iterator[FaultySMTPServer]:
    """With CHUNKING the message goes in one write with its envelope; without, after a 354."""
    with FaultySMTPServer(PLAN, slow_seconds=1.0, chunking=request.param == "bdat") as running:
        yield running


@pytest.fixture
def client(server: FaultySMTPServer) -> Iterator[SmtpTransport]:
    transport = SmtpTransport(SmtpConfig.from_url(server.smtp_url(timeout=1.5)))
    yield transport
    transport.close()


def send(client: SmtpTransport, recipient: str) -> tuple[Outcome, int | None, str, float]:
    began = time.monotonic()
    result = client.send("bounces@example.com", recipient, MESSAGE)
    return result.outcome, result.code, result.text, time.monotonic() - began


def test_each_fault_reaches_the_client_as_described(
    server: FaultySMTPServer, client: SmtpTransport
) -> None:
    assert send(client, "ok@example.com")[0] is Outcome.SENT

    outcome, _, text, took = send(client, "hang@example.com")
    assert outcome is Outcome.TEMPORARY and "timed out" in text and 1.4 < took < 2.5

    outcome, _, text, took = send(client, "reset@example.com")
    assert outcome is Outcome.TEMPORARY and "connection" in text.lower() and took < 1.0

    outcome, _, _, took = send(client, "slow@example.com")
    assert outcome is Outcome.SENT and 0.95 < took < 1.5  # just under the 1.5 s timeout

    outcome, code, text, _ = send(client, "shut@example.com")
    assert (outcome, code) == (Outcome.TEMPORARY, 421) and "shutting down" in text
    assert send(client, "shut@example.com")[0] is Outcome.SENT  # second attempt: accepted

    # Only what got a 250 counts as received, each with the Message-ID it carried.
    assert server.received() == {
        "ok@example.com": 1,
        "slow@example.com": 1,
        "shut@example.com": 1,
    }
    assert server.message_ids()["ok@example.com"] == {"<fixed.1@example.com>"}
    faults = {f.recipient: f for f in server.faults()}
    assert set(faults) == {f"{name}@example.com" for name in ("hang", "reset", "slow", "shut")}
    hang = faults["hang@example.com"]
    assert hang.held is not None and 1.4 < hang.held < 2.5  # released when the client gave up
    assert faults["slow@example.com"].held is not None
    assert faults["shut@example.com"].attempt == 1
    assert server.connections >= 4  # each fault but the slow reply cost the connection


def test_every_nth_faults_only_first_attempts() -> None:
    plan = every_nth(3, Fault.REPLY_421_CLOSE)
    assert [plan(n, "a@example.com", 1) for n in (1, 2, 3, 6)] == [
        Fault.NONE,
        Fault.NONE,
        Fault.REPLY_421_CLOSE,
        Fault.REPLY_421_CLOSE,
    ]
    assert plan(9, "a@example.com", 2) is Fault.NONE
    always = every_nth(3, Fault.HANG_AFTER_DATA, first_attempt_only=False)
    assert always(9, "a@example.com", 2) is Fault.HANG_AFTER_DATA


def test_a_client_that_gives_up_on_a_slow_reply_is_not_counted_as_delivered() -> None:
    with FaultySMTPServer(for_recipients(["slow@example.com"], Fault.SLOW_REPLY)) as server:
        server.slow_seconds = 2.0
        transport = SmtpTransport(SmtpConfig.from_url(server.smtp_url(timeout=1.0)))
        try:
            outcome, _, text, _ = send(transport, "slow@example.com")
        finally:
            transport.close()
        assert outcome is Outcome.TEMPORARY and "timed out" in text
        time.sleep(1.3)  # past the server's delay: it would have said 250 by now
        assert server.received() == {}
