"""SmtpTransport against real SMTP servers over real connections (no mocking of smtplib)."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mailer.transport import (
    NO_SMTPUTF8,
    MemoryTransport,
    Outcome,
    SendResult,
    SmtpConfig,
    SmtpTransport,
    classify,
)
from tests.support.smtp_server import DROP, ScriptedSMTPServer, TricklingSMTPServer

SENDER = "bounces+abc@news.example.com"
ARABIC_READER = "قارئ@example.com"

Connect = Callable[..., SmtpTransport]


def message(n: int, to: str = "reader@example.com", body: str = "hello") -> bytes:
    return (
        f"From: news@example.com\r\nTo: {to}\r\nSubject: test {n}\r\n"
        f"Message-ID: <{n}@news.example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"\r\n{body}\r\n"
    ).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["stepwise", "pipelined"])
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedSMTPServer]:
    """Every exchange runs twice: command by command, and with MAIL, RCPT and DATA
    pipelined (RFC 2920) to a server that offers PIPELINING."""
    with ScriptedSMTPServer(pipelining=request.param == "pipelined") as smtp:
        yield smtp


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Make transports from a URL (plus query options); all are closed at the end."""
    made: list[SmtpTransport] = []

    def make(url: str, **options: object) -> SmtpTransport:
        query = "&".join(f"{k}={v}" for k, v in {"connect_timeout": 2, **options}.items())
        transport = SmtpTransport(SmtpConfig.from_url(f"{url}?{query}"))
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


def test_many_messages_share_one_connection(server: ScriptedSMTPServer, connect: Connect) -> None:
    transport = connect(server.url)
    results = [transport.send(SENDER, f"r{n}@example.com", message(n)) for n in range(3)]

    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert results[0].code == 250
    assert server.connections == 1 and server.ehlo_count == 1 and transport.connections == 1
    assert server.message_ids() == [f"<{n}@news.example.com>" for n in range(3)]
    assert server.received[1].rcpt_tos == ["r1@example.com"]
    assert server.received[1].mail_from == SENDER


def test_bytes_arrive_exactly_and_8bit_bodies_say_so(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    arabic = message(1, body="عاجل: خبر مهم\r\n.سطر يبدأ بنقطة")
    assert transport.send(SENDER, "a@example.com", arabic).outcome is Outcome.SENT
    assert transport.send(SENDER, "b@example.com", message(2)).outcome is Outcome.SENT

    assert server.received[0].data == arabic  # dot-stuffing round-trips
    assert server.received[0].mail_options == ["BODY=8BITMIME"]
    assert server.received[1].mail_options == []
    assert transport.eightbitmime is True


@pytest.mark.parametrize(
    ("code", "text", "outcome", "enhanced"),
    [
        (451, "4.7.1 try later", Outcome.TEMPORARY, "4.7.1"),
        (550, "5.1.1 no such user here", Outcome.HARD_BOUNCE, "5.1.1"),
        (552, "5.2.2 mailbox full", Outcome.TEMPORARY, "5.2.2"),
        (554, "5.7.1 rejected by policy", Outcome.PERMANENT, "5.7.1"),
        (550, "User unknown", Outcome.HARD_BOUNCE, None),
    ],
)
def test_refused_recipient_is_classified_and_connection_reused(
    server: ScriptedSMTPServer,
    connect: Connect,
    code: int,
    text: str,
    outcome: Outcome,
    enhanced: str | None,
) -> None:
    server.set_rule(ScriptedSMTPServer.refuse(code, text, recipients={"bad@example.com"}))
    transport = connect(server.url)

    result = transport.send(SENDER, "bad@example.com", message(1))
    assert result == SendResult(outcome, code, text, enhanced)
    assert server.commands[-1] == "RSET"  # the connection is clean for the next message

    assert transport.send(SENDER, "good@example.com", message(2)).outcome is Outcome.SENT
    assert server.connections == 1
    assert [r.rcpt_tos for r in server.received] == [["good@example.com"]]


def test_refusal_after_data_keeps_the_connection(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    server.set_data_rule(ScriptedSMTPServer.refuse(554, "5.7.1 spam", until_attempt=1))
    transport = connect(server.url)

    assert transport.send(SENDER, "a@example.com", message(1)) == SendResult(
        Outcome.PERMANENT, 554, "5.7.1 spam", "5.7.1"
    )
    assert transport.send(SENDER, "a@example.com", message(2)).outcome is Outcome.SENT
    assert server.connections == 1


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_421_discards_the_connection_and_the_next_message_reconnects(
    server: ScriptedSMTPServer, connect: Connect, stage: str
) -> None:
    rule = ScriptedSMTPServer.refuse(421, "4.3.2 shutting down", recipients={"a@example.com"})
    (server.set_rule if stage == "rcpt" else server.set_data_rule)(rule)
    transport = connect(server.url)

    first = transport.send(SENDER, "a@example.com", message(1))
    assert (first.outcome, first.code, first.text) == (
        Outcome.TEMPORARY,
        421,
        "4.3.2 shutting down",
    )

    assert transport.send(SENDER, "b@example.com", message(2)).outcome is Outcome.SENT
    assert server.connections == 2 and transport.connections == 2
    assert [r.rcpt_tos for r in server.received] == [["b@example.com"]]


def test_hanging_server_times_out_and_the_next_message_gets_through(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url, timeout=1)
    assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT

    server.hang(True)
    started = time.monotonic()
    result = transport.send(SENDER, "b@example.com", message(2))
    elapsed = time.monotonic() - started
    server.hang(False)

    assert result == SendResult(
        Outcome.TEMPORARY, None, "timed out after 1 s waiting for the reply to MAIL FROM", None
    )
    assert 0.9 < elapsed < 3
    assert transport.send(SENDER, "c@example.com", message(3)).outcome is Outcome.SENT
    assert transport.connections == 2  # the timed-out connection was not reused


def test_server_that_never_greets_times_out(server: ScriptedSMTPServer, connect: Connect) -> None:
    server.hang(True)
    started = time.monotonic()
    result = connect(server.url, timeout=1).send(SENDER, "a@example.com", message(1))

    assert time.monotonic() - started < 3
    assert result.outcome is Outcome.TEMPORARY and result.code is None
    assert result.text == "timed out after 1 s waiting for the greeting"


def test_trickling_server_is_cut_off_by_the_message_deadline(connect: Connect) -> None:
    with TricklingSMTPServer(interval=0.3) as trickle:
        transport = connect(trickle.url, timeout=1)
        started = time.monotonic()
        result = transport.send(SENDER, "a@example.com", message(1))
        elapsed = time.monotonic() - started

    assert result.outcome is Outcome.TEMPORARY and result.code is None
    assert result.text == "timed out after 1 s waiting for the reply to MAIL FROM"
    assert elapsed < 1.5


def test_refused_connection_is_temporary_and_retried_on_the_next_send(connect: Connect) -> None:
    port = free_port()
    transport = connect(f"smtp://127.0.0.1:{port}")
    started = time.monotonic()
    result = transport.send(SENDER, "a@example.com", message(1))

    assert time.monotonic() - started < 1
    assert result == SendResult(
        Outcome.TEMPORARY, None, f"connection refused by 127.0.0.1:{port}", None, server_fault=True
    )
    assert transport.eightbitmime is False  # unknown: cannot connect

    with ScriptedSMTPServer(port=port) as late:
        assert transport.send(SENDER, "a@example.com", message(2)).outcome is Outcome.SENT
        assert len(late.received) == 1


def test_unresolvable_host_is_temporary(connect: Connect) -> None:
    result = connect("smtp://no-such-host.invalid:25").send(SENDER, "a@example.com", message(1))
    assert result.outcome is Outcome.TEMPORARY and result.code is None
    assert result.server_fault  # nothing was sent: another server may take the message
    assert result.text.startswith("cannot resolve no-such-host.invalid")


def test_idle_connection_dropped_by_the_server_is_replaced_transparently(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT
    server.drop_connections()

    assert transport.send(SENDER, "b@example.com", message(2)).outcome is Outcome.SENT
    assert server.connections == 2 and len(server.received) == 2


def test_server_restart_between_messages_is_transparent(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT
    server.stop()
    server.start()  # same port

    assert transport.send(SENDER, "b@example.com", message(2)).outcome is Outcome.SENT
    assert [r.rcpt_tos for r in server.received] == [["a@example.com"], ["b@example.com"]]


def test_no_retry_once_the_content_was_sent(server: ScriptedSMTPServer, connect: Connect) -> None:
    # The server may have accepted the message before the connection died: a retry could
    # deliver it twice, so the loss is reported and the row retried later (with its stable
    # Message-ID) instead.
    server.set_data_rule(ScriptedSMTPServer.refuse(DROP, "", until_attempt=1))
    transport = connect(server.url)

    result = transport.send(SENDER, "a@example.com", message(1))
    assert result.outcome is Outcome.TEMPORARY and result.code is None
    assert result.text.startswith("connection lost waiting for the reply to DATA")
    assert server.commands.count("DATA") == 1

    assert transport.send(SENDER, "a@example.com", message(2)).outcome is Outcome.SENT


@pytest.mark.parametrize("flagged", [True, False])
def test_smtputf8_recipient_without_server_support_fails_cleanly(
    connect: Connect, flagged: bool
) -> None:
    with ScriptedSMTPServer(smtputf8=False) as plain:
        transport = connect(plain.url)
        result = transport.send(SENDER, ARABIC_READER, message(1), smtputf8=flagged)

        assert result == SendResult(Outcome.PERMANENT, None, NO_SMTPUTF8, None)
        assert "MAIL" not in plain.commands and plain.received == []
        # An ordinary reader on the same connection is unaffected.
        assert transport.send(SENDER, "a@example.com", message(2)).outcome is Outcome.SENT


def test_smtputf8_recipient_is_delivered_when_offered(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    data = message(1, to=ARABIC_READER, body="مرحبا")
    assert transport.send(SENDER, ARABIC_READER, data, smtputf8=True).outcome is Outcome.SENT
    assert transport.send(SENDER, "a@example.com", message(2)).outcome is Outcome.SENT

    first, second = server.received
    assert first.rcpt_tos == [ARABIC_READER] and first.data == data
    assert first.mail_options == ["SMTPUTF8", "BODY=8BITMIME"]
    assert second.mail_options == []


def test_starttls_and_login(connect: Connect) -> None:
    with ScriptedSMTPServer(tls=True, users={"news": "p@ss word"}) as secure:
        transport = connect(
            f"smtp://news:p%40ss%20word@127.0.0.1:{secure.port}", starttls="true", verify="false"
        )
        for n in range(2):
            assert transport.send(SENDER, "a@example.com", message(n)).outcome is Outcome.SENT
        assert secure.connections == 1 and secure.ehlo_count == 2  # EHLO again after STARTTLS
        assert secure.commands.count("AUTH") == 1


def test_implicit_tls(connect: Connect) -> None:
    with ScriptedSMTPServer(implicit_tls=True, users={"news": "secret"}) as secure:
        transport = connect(f"smtps://news:secret@127.0.0.1:{secure.port}", verify="false")
        assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT
        assert "AUTH" in secure.commands


def test_session_failures_never_condemn_the_recipient(connect: Connect) -> None:
    with ScriptedSMTPServer(tls=True, users={"news": "secret"}) as secure:
        url = f"smtp://news:wrong@127.0.0.1:{secure.port}"
        bad_login = connect(url, starttls="true", verify="false").send(
            SENDER, "a@x.org", message(1)
        )
        assert (bad_login.outcome, bad_login.code) == (Outcome.TEMPORARY, 535)
        assert bad_login.text.endswith("(waiting for the reply to AUTH)")

        unverified = connect(url, starttls="true").send(SENDER, "a@x.org", message(1))
        assert unverified.outcome is Outcome.TEMPORARY
        assert "CERTIFICATE_VERIFY_FAILED" in unverified.text
    assert secure.received == []


def test_eightbitmime_connects_lazily_and_the_connection_is_reused(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    assert server.connections == 0  # the constructor does not connect
    assert transport.eightbitmime is True
    assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT
    assert server.connections == 1


def test_close_quits_and_the_transport_can_be_used_again(
    server: ScriptedSMTPServer, connect: Connect
) -> None:
    transport = connect(server.url)
    assert transport.send(SENDER, "a@example.com", message(1)).outcome is Outcome.SENT
    transport.close()
    transport.close()  # harmless when already closed
    assert transport.send(SENDER, "b@example.com", message(2)).outcome is Outcome.SENT
    assert server.connections == 2


def test_programming_errors_raise(server: ScriptedSMTPServer, connect: Connect) -> None:
    transport = connect(server.url)
    with pytest.raises(TypeError):
        transport.send(SENDER, "a@example.com", "not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CR, LF"):
        transport.send(SENDER, "a@example.com\r\nRCPT TO:<b@example.com>", message(1))
    with pytest.raises(ValueError, match="angle bracket"):  # would close the <…> early
        transport.send(SENDER, "a@example.com> NOTIFY=NEVER", message(1))
    assert server.commands == []


def deadline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "smtp-deadline"]


def test_one_deadline_thread_per_transport_and_it_ends_with_the_transport(
    server: ScriptedSMTPServer,
) -> None:
    existing = deadline_threads()
    transport = SmtpTransport(SmtpConfig.from_url(server.url))
    for n in range(5):
        transport.send(SENDER, "a@example.com", message(n))
    assert len(deadline_threads()) == len(existing) + 1
    transport.close()

    (thread,) = [t for t in deadline_threads() if t not in existing]
    del transport
    gc.collect()
    thread.join(timeout=2)
    assert not thread.is_alive()


# --- configuration ---------------------------------------------------------------------


def test_from_url_reads_everything() -> None:
    config = SmtpConfig.from_url(
        "smtp://us%40er:p%40ss@mail.example.com:587?starttls=true&connect_timeout=5&timeout=30"
        "&local_hostname=news.example.com"
    )
    assert config == SmtpConfig(
        host="mail.example.com",
        port=587,
        username="us@er",
        password="p@ss",
        starttls=True,
        ssl=False,
        connect_timeout=5.0,
        message_timeout=30.0,
        local_hostname="news.example.com",
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "ssl", "starttls"),
    [
        ("smtp://localhost", "localhost", 25, False, False),
        ("smtps://mail.example.com", "mail.example.com", 465, True, False),
        ("smtp://[::1]:2525/?starttls=no", "::1", 2525, False, False),
        ("SMTP://Mail.Example.com:587?starttls=1", "mail.example.com", 587, False, True),
    ],
)
def test_from_url_defaults(url: str, host: str, port: int, ssl: bool, starttls: bool) -> None:
    config = SmtpConfig.from_url(url)
    assert (config.host, config.port, config.ssl, config.starttls) == (host, port, ssl, starttls)
    assert (config.username, config.password) == (None, None)
    assert (config.connect_timeout, config.message_timeout) == (10.0, 60.0)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://u:s3cret@mail.example.com", "must start with smtp://"),
        ("mail.example.com:25", "must start with smtp://"),
        ("smtp://u:s3cret@", "no host"),
        ("smtp://u:s3cret@host:99999", "invalid port"),
        ("smtp://u:s3cret@host:0", "must be smtp"),
        ("smtp://u:s3cret@host:25/relay", "must be smtp"),
        ("smtp://u:s3cret@host?starttls=maybe", "starttls= must be true or false"),
        ("smtp://u:s3cret@host?timeout=0", "timeout= must be a positive number"),
        ("smtp://u:s3cret@host?connect_timeout=soon", "connect_timeout= must be a positive"),
        ("smtp://u:s3cret@host?timeout=inf", "timeout= must be a positive number"),
        ("smtp://u:s3cret@host?tls=true", "unknown SMTP URL option 'tls'"),
        ("smtps://u:s3cret@host?starttls=true", "already TLS"),
    ],
)
def test_from_url_rejects_garbage_without_leaking_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        SmtpConfig.from_url(url)
    assert "s3cret" not in str(caught.value)


def test_repr_hides_the_password() -> None:
    config = SmtpConfig.from_url("smtp://news:s3cret@mail.example.com:587?starttls=true")
    assert "s3cret" not in repr(config)
    assert "password='***'" in repr(config) and "username='news'" in repr(config)
    assert "password=None" in repr(SmtpConfig.from_url("smtp://localhost"))


# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        (250, "2.0.0 OK queued", Outcome.SENT),
        (251, "User not local; will forward", Outcome.SENT),
        (None, "timed out after 60 s waiting for the reply to DATA", Outcome.TEMPORARY),
        (421, "4.3.2 Service shutting down", Outcome.TEMPORARY),
        (450, "4.2.1 mailbox busy", Outcome.TEMPORARY),
        (451, "4.7.1 greylisted, try later", Outcome.TEMPORARY),
        (452, "4.5.3 too many recipients", Outcome.TEMPORARY),
        (354, "unexpected", Outcome.TEMPORARY),
        (552, "5.3.4 message too big for system", Outcome.TEMPORARY),
        (552, "Requested mail action aborted: exceeded storage allocation", Outcome.TEMPORARY),
        (550, "5.2.2 mailbox full", Outcome.TEMPORARY),
        (554, "5.7.1 Message rejected as spam", Outcome.PERMANENT),
        (550, "5.7.1 Relaying denied", Outcome.PERMANENT),
        (550, "5.7.1 mailbox unavailable: policy", Outcome.PERMANENT),  # enhanced code wins
        (553, "5.1.8 sender domain does not resolve", Outcome.PERMANENT),  # our problem
        (500, "Syntax error", Outcome.PERMANENT),
        (
            550,
            "5.1.1 The email account that you tried to reach does not exist",
            Outcome.HARD_BOUNCE,
        ),
        (550, "5.1.2 bad destination domain", Outcome.HARD_BOUNCE),
        (553, "5.1.3 bad destination mailbox address syntax", Outcome.HARD_BOUNCE),
        (551, "5.1.6 user has moved", Outcome.HARD_BOUNCE),
        (550, "5.1.10 null MX", Outcome.HARD_BOUNCE),
        (552, "5.1.1 no such user", Outcome.HARD_BOUNCE),
        (550, "Requested action not taken: mailbox unavailable", Outcome.HARD_BOUNCE),
        (550, "No such user here", Outcome.HARD_BOUNCE),
        (551, "User unknown; please try <other@example.com>", Outcome.HARD_BOUNCE),
        (553, "sorry, no mailbox here by that name (#5.1.1)", Outcome.PERMANENT),
        (550, "<x@example.com>: Recipient address rejected: User unknown", Outcome.HARD_BOUNCE),
        (554, "User unknown", Outcome.PERMANENT),  # only 550/551/553 without a code
    ],
)
def test_classify(code: int | None, text: str, outcome: Outcome) -> None:
    assert classify(code, text) is outcome


def test_send_result_from_reply() -> None:
    assert SendResult.from_reply(550, b"5.1.1 <a@x.org>: no such user") == SendResult(
        Outcome.HARD_BOUNCE, 550, "5.1.1 <a@x.org>: no such user", "5.1.1"
    )


# --- the in-memory seam --------------------------------------------------------------------


def test_memory_transport_records_and_follows_its_script() -> None:
    full = SendResult.from_reply(552, "5.2.2 mailbox full")
    memory = MemoryTransport({"full@example.com": full}, smtputf8=False)

    assert memory.send(SENDER, "a@example.com", b"one").outcome is Outcome.SENT
    assert memory.send(SENDER, "full@example.com", b"two") is full
    assert memory.send(SENDER, ARABIC_READER, b"three", smtputf8=True).text == NO_SMTPUTF8
    assert memory.sent == [(SENDER, "a@example.com", b"one")]
    assert [a[1] for a in memory.attempts] == ["a@example.com", "full@example.com", ARABIC_READER]

    scripted = MemoryTransport(lambda rcpt: SendResult.temporary(f"later for {rcpt}"))
    assert scripted.send(SENDER, "b@example.com", b"x").text == "later for b@example.com"
    assert scripted.eightbitmime is True
    scripted.close()
    assert scripted.closed == 1
