"""RFC 2920 pipelining as seen from the server's side of a real socket.

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
    """One connection at a time; ``replies`` maps a verb to its reply (default 250)."""

    pipelining: bool = True
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
        buffer, in_data = b"", False
        while chunk := conn.recv(65536):
            self.chunks.append(chunk)
            buffer += chunk
            out = b""
            while True:
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
                    out += b"250-raw\r\n" + extensions + b"250 8BITMIME\r\n"
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
