"""RFC 2920 pipelining and RFC 3030 BDAT as seen from the server's side of a real socket.

aiosmtpd (the other tests' server) answers pipelined commands but cannot show how they
arrived, so this server is a few lines over a raw socket: it notes every chunk it reads and
answers each command from a script.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from mailer.transport import Outcome, SmtpConfig, SmtpTransport

SENDER = "bounces+abc@news.example.com"
MESSAGE = b"Subject: x\r\nMessage-ID: <1@news.example.com>\r\n\r\n.starts with a dot\r\n"


@dataclass
class RawServer:
    """One connection at a time; ``replies`` maps a verb to its reply (default 250; an empty
    reply to BDAT hangs up instead)."""

    pipelining: bool = True
    chunking: bool = False
    replies: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.sock.getsockname()[1]}?timeout=5"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.sendall(b"220 raw ESMTP\r\n")
        buffer, in_data, chunk_size = b"", False, -1
        while chunk := conn.recv(65536):
            self.chunks.append(chunk)
            buffer += chunk
            out = b""
            while True:
                if chunk_size >= 0:
                    if len(buffer) < chunk_size:
                        break
                    self.messages.append(buffer[:chunk_size])
                    buffer, chunk_size = buffer[chunk_size:], -1
                    reply = self.replies.get(b"BDAT", b"250 2.0.0 queued")
                    if not reply:
                        return
                    out += reply + b"\r\n"
                    continue
                if in_data:
                    end = buffer.find(b"\r\n.\r\n")
                    if not buffer.startswith(b".\r\n") and end < 0:
                        break
                    body, buffer = (
                        (b"", buffer[3:])
                        if buffer.startswith(b".\r\n")
                        else (buffer[: end + 2], buffer[end + 5 :])
                    )
                    self.messages.append(body)
                    out += self.replies.get(b"END", b"250 2.0.0 queued") + b"\r\n"
                    in_data = False
                    continue
                line, sep, rest = buffer.partition(b"\r\n")
                if not sep:
                    break
                buffer, verb = rest, line.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    extensions = b"250-PIPELINING\r\n" if self.pipelining else b""
                    extensions += b"250-CHUNKING\r\n" if self.chunking else b""
                    out += b"250-raw\r\n" + extensions + b"250 8BITMIME\r\n"
                    continue
                if verb == b"BDAT":
                    chunk_size = int(line.split()[1])
                    continue
                reply = self.replies.get(verb, b"354 go on" if verb == b"DATA" else b"250 ok")
                in_data = verb == b"DATA" and reply.startswith(b"354")
                out += reply + b"\r\n"
            conn.sendall(out)  # one write per read, as a pipelining server does

    def commands(self) -> list[bytes]:
        return [line.split(b" ")[0].upper() for c in self.chunks for line in c.split(b"\r\n")[:-1]]


@pytest.fixture
def raw() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.sock.close()


def send(
    server: RawServer, to: str = "a@example.com", **options: str
) -> tuple[SmtpTransport, Outcome, str]:
    query = "".join(f"&{k}={v}" for k, v in options.items())
    transport = SmtpTransport(SmtpConfig.from_url(server.url + query))
    result = transport.send(SENDER, to, MESSAGE)
    return transport, result.outcome, result.text


def test_mail_rcpt_and_data_travel_in_one_write_and_the_message_arrives_intact(
    raw: RawServer,
) -> None:
    transport, outcome, _ = send(raw)
    transport.close()

    assert outcome is Outcome.SENT
    assert raw.messages == [MESSAGE.replace(b"\r\n.starts", b"\r\n..starts")]  # dot-stuffed
    envelope = next(c for c in raw.chunks if c.startswith(b"MAIL"))
    assert envelope.split(b"\r\n")[:3] == [
        b"MAIL FROM:<bounces+abc@news.example.com>",
        b"RCPT TO:<a@example.com>",
        b"DATA",
    ]


def test_without_the_extension_or_when_turned_off_commands_go_one_by_one(raw: RawServer) -> None:
    _, outcome, _ = send(raw, pipelining="false")
    assert outcome is Outcome.SENT
    assert not any(c.startswith(b"MAIL") and b"RCPT" in c for c in raw.chunks)

    raw.pipelining, raw.chunks = False, []
    _, outcome, _ = send(raw)
    assert outcome is Outcome.SENT
    assert not any(c.startswith(b"MAIL") and b"RCPT" in c for c in raw.chunks)


def test_refused_recipient_is_reported_not_the_bad_sequence_that_follows(raw: RawServer) -> None:
    raw.replies = {b"RCPT": b"550 5.1.1 no such user", b"DATA": b"503 5.5.1 no valid recipients"}
    transport, outcome, text = send(raw)

    assert (outcome, text) == (Outcome.HARD_BOUNCE, "5.1.1 no such user")
    assert raw.commands()[-1] == b"RSET"  # the connection is clean for the next message
    raw.replies = {}
    assert transport.send(SENDER, "b@example.com", MESSAGE).outcome is Outcome.SENT
    assert len(raw.messages) == 1


def test_data_accepted_without_a_recipient_sends_an_empty_message_and_reports_the_refusal(
    raw: RawServer,
) -> None:
    # RFC 2920 §3.1: a server may answer 354 although every RCPT failed; the client must then
    # end the (empty) message at once instead of sending the content.
    raw.replies = {b"RCPT": b"452 4.2.2 over quota"}
    _, outcome, text = send(raw)

    assert (outcome, text) == (Outcome.TEMPORARY, "4.2.2 over quota")
    assert raw.messages == [b""]
    assert raw.commands()[-1] == b"RSET"


def test_421_to_mail_stops_reading_and_the_next_message_reconnects(raw: RawServer) -> None:
    raw.replies = {b"MAIL": b"421 4.3.2 closing"}
    transport, outcome, text = send(raw)
    assert (outcome, text) == (Outcome.TEMPORARY, "4.3.2 closing")

    raw.replies = {}
    assert transport.send(SENDER, "b@example.com", MESSAGE).outcome is Outcome.SENT
    assert transport.connections == 2


# -- BDAT (RFC 3030) ------------------------------------------------------------------------


def test_with_chunking_the_message_travels_with_its_envelope_unstuffed(raw: RawServer) -> None:
    raw.chunking = True
    transport, outcome, _ = send(raw)
    assert transport.send(SENDER, "a@example.com", MESSAGE).outcome is Outcome.SENT
    transport.close()

    assert outcome is Outcome.SENT
    assert raw.messages == [MESSAGE, MESSAGE]  # byte for byte: BDAT counts, nothing is stuffed
    envelope = next(c for c in raw.chunks if c.startswith(b"MAIL"))
    head = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<a@example.com>\r\nBDAT {len(MESSAGE)} LAST\r\n"
    assert envelope == head.encode() + MESSAGE  # one write: one round trip per message
    assert b"DATA" not in raw.commands()


def test_chunking_turned_off_or_after_a_pause_the_message_waits_for_354(
    raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw.chunking = True
    transport, outcome, _ = send(raw, chunking="false")
    transport.close()
    assert outcome is Outcome.SENT and raw.commands().count(b"DATA") == 1

    # A connection idle for a while may have been dropped by the server; DATA keeps the content
    # back until the server has answered, so a dead connection can be retried at once.
    monkeypatch.setattr("mailer.transport._BUSY_SECONDS", 0.0)
    raw.chunks = []
    transport, outcome, _ = send(raw)
    assert outcome is Outcome.SENT and b"BDAT" in raw.commands()  # a new connection: BDAT
    raw.chunks = []
    assert transport.send(SENDER, "b@example.com", MESSAGE).outcome is Outcome.SENT
    assert b"DATA" in raw.commands() and b"BDAT" not in raw.commands()


def test_with_chunking_a_refused_recipient_is_reported_and_nothing_is_delivered(
    raw: RawServer,
) -> None:
    raw.chunking = True
    raw.replies = {b"RCPT": b"550 5.1.1 no such user", b"BDAT": b"554 5.5.1 no valid recipients"}
    transport, outcome, text = send(raw)

    assert (outcome, text) == (Outcome.HARD_BOUNCE, "5.1.1 no such user")
    assert raw.commands()[-1] == b"RSET"
    raw.replies = {}
    assert transport.send(SENDER, "b@example.com", MESSAGE).outcome is Outcome.SENT


def test_with_chunking_the_reply_to_the_content_decides(raw: RawServer) -> None:
    raw.chunking = True
    raw.replies = {b"BDAT": b"452 4.3.1 insufficient system storage"}
    transport, outcome, text = send(raw)
    transport.close()
    assert (outcome, text) == (Outcome.TEMPORARY, "4.3.1 insufficient system storage")

    raw.replies = {b"MAIL": b"421 4.3.2 closing"}
    transport, outcome, _ = send(raw)
    assert outcome is Outcome.TEMPORARY
    raw.replies = {}
    assert transport.send(SENDER, "b@example.com", MESSAGE).outcome is Outcome.SENT
    assert transport.connections == 2  # 421 dropped the connection


def test_a_connection_lost_after_the_chunk_is_not_retried_at_once(raw: RawServer) -> None:
    """The server had the whole message and may have queued it: resending it now could give
    the reader two copies. It is a temporary failure, retried later like any other."""
    raw.chunking = True
    transport, outcome, _ = send(raw)
    assert outcome is Outcome.SENT
    raw.replies = {b"BDAT": b""}  # reads the message, then hangs up without a word
    result = transport.send(SENDER, "b@example.com", MESSAGE)

    assert result.outcome is Outcome.TEMPORARY and "connection" in result.text.lower()
    assert len(raw.messages) == 2 and transport.connections == 1
