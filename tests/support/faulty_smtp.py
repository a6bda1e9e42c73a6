"""A fault-injecting SMTP server for the fault tests (``tests/faults``).

Written on raw asyncio streams rather than aiosmtpd, so that the test controls every byte and
every moment: after the DATA terminator it can hang forever, reset the TCP connection while
the body is still arriving, answer only after a delay just under the client's timeout, say
421 and hang up, or accept the message and withhold the 250 (the worst moment to kill the
worker sending it: the reader has the message, the database does not know).

A *plan* picks the fault per message: it is called with the message's number (1 for the
first DATA this server saw), its first recipient and that recipient's attempt number (1 for
the first DATA naming them), so a test can fault every N-th message, chosen readers, or first
attempts only.

What the server accepted is what readers received: a message counts once the server writes
its ``250`` (or, for the withheld reply, as soon as it has the whole message).
:attr:`FaultySMTPServer.accepted` records each one (recipients, Message-ID, when MAIL FROM
arrived and when it was accepted); :attr:`injected` records each fault and when the client let
go of the message (for a hang: gave up and closed the connection), which is how a test proves
that no worker stayed stuck past its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from enum import StrEnum

_TERMINATOR = b"\r\n.\r\n"
_HOSTNAME = b"faulty-smtp.test"
_LIMIT = 64 * 1024 * 1024  # a StreamReader's buffer: a whole message body fits


class Fault(StrEnum):
    """What the server does to one message."""

    NONE = "none"
    HANG_AFTER_DATA = "hang after DATA"
    RESET_MID_DATA = "reset mid-DATA"
    SLOW_REPLY = "reply just under the timeout"
    REPLY_421_CLOSE = "421 then close"
    # Accepted (the reader has it) but the 250 is never sent: the moment to kill a worker,
    # whose row then still says "sending" although the message went out.
    ACCEPT_WITHOUT_REPLY = "accepted, no reply"


Plan = Callable[[int, str, int], Fault]
"""``plan(message number, first recipient, attempt of that recipient) -> Fault``."""


@dataclass(frozen=True)
class Accepted:
    """A message the server said 250 to: a reader received it."""

    number: int
    recipients: tuple[str, ...]
    message_id: str | None
    started: float  # time.monotonic() at MAIL FROM
    replied: float  # time.monotonic() when the 250 was written


@dataclass
class Injected:
    """A fault the server played; ``released`` is when the client let go of the message
    (closed the connection, or got the reply), None while it still holds on."""

    number: int
    recipient: str
    attempt: int
    fault: Fault
    started: float
    released: float | None = None

    @property
    def held(self) -> float | None:
        """Seconds from MAIL FROM until the client let go."""
        return None if self.released is None else self.released - self.started


def no_faults(number: int, recipient: str, attempt: int) -> Fault:
    return Fault.NONE


def every_nth(n: int, fault: Fault, *, first_attempt_only: bool = True) -> Plan:
    """Fault every ``n``-th message the server sees (by default never a retry)."""

    def plan(number: int, recipient: str, attempt: int) -> Fault:
        if number % n == 0 and (attempt == 1 or not first_attempt_only):
            return fault
        return Fault.NONE

    return plan


def for_recipients(
    recipients: Iterable[str], fault: Fault, *, until_attempt: int | None = None
) -> Plan:
    """Fault chosen readers' messages, up to ``until_attempt`` (always when None)."""
    chosen = frozenset(recipients)

    def plan(number: int, recipient: str, attempt: int) -> Fault:
        if recipient in chosen and (until_attempt is None or attempt <= until_attempt):
            return fault
        return Fault.NONE

    return plan


class Once:
    """A plan that plays ``fault`` on the next message only, each time it is armed."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self._armed = threading.Event()

    def arm(self) -> None:
        self._armed.set()

    def __call__(self, number: int, recipient: str, attempt: int) -> Fault:
        if self._armed.is_set():
            self._armed.clear()
            return self.fault
        return Fault.NONE


def combine(*plans: Plan) -> Plan:
    """The first plan that faults the message decides."""

    def plan(number: int, recipient: str, attempt: int) -> Fault:
        for each in plans:
            fault = each(number, recipient, attempt)
            if fault is not Fault.NONE:
                return fault
        return Fault.NONE

    return plan


def _address(argument: bytes) -> str:
    """The address inside ``FROM:<…>`` / ``TO:<…>`` (parameters after it ignored)."""
    text = argument.decode("utf-8", "replace")
    start, end = text.find("<"), text.find(">")
    if start != -1 and end > start:
        return text[start + 1 : end]
    return text.split(":", 1)[-1].strip().split(" ", 1)[0]


def _message_id(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    value = BytesHeaderParser().parsebytes(head + b"\r\n\r\n").get("Message-ID")
    return str(value).strip() if value is not None else None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashing server or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultySMTPServer:
    """An SMTP server on 127.0.0.1 (an OS-chosen port) in a thread of its own.

    ``plan`` decides each message's fault; ``delay`` slows every normal message (so a test's
    kill lands mid-edition); ``slow_seconds`` is the answer delay of :attr:`Fault.SLOW_REPLY`.
    Everything recorded is guarded by a lock; read it through the methods or under ``lock``.
    """

    def __init__(
        self,
        plan: Plan = no_faults,
        *,
        slow_seconds: float = 1.5,
        delay: float = 0.0,
        chunking: bool = True,
    ) -> None:
        self.plan = plan
        self.chunking = chunking  # offer CHUNKING (RFC 3030 BDAT), as Postfix and Exchange do
        self.slow_seconds = slow_seconds
        self.delay = delay
        self.host, self.port = "127.0.0.1", 0
        self.lock = threading.Lock()
        self.accepted: list[Accepted] = []
        self.injected: list[Injected] = []
        self.connections = 0
        #: Client ports of connections holding an accepted message without its reply
        #: (:attr:`Fault.ACCEPT_WITHOUT_REPLY`), so a test can find and kill the sender.
        self.unanswered: queue.Queue[int] = queue.Queue()
        self._number = 0
        self._attempts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def smtp_url(self, timeout: float = 2.0, connect_timeout: float = 1.0) -> str:
        """``MAILER_SMTP_URL`` for workers: short per-message and connect timeouts."""
        return f"{self.url}?timeout={timeout:g}&connect_timeout={connect_timeout:g}"

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, self.host, 0, limit=_LIMIT), self._loop
        )
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Cut every connection and stop listening (idempotent)."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> FaultySMTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened ---------------------------------------------------------------------

    def received(self) -> Counter[str]:
        """Copies accepted per recipient."""
        with self.lock:
            return Counter(r for a in self.accepted for r in a.recipients)

    def accepted_count(self) -> int:
        with self.lock:
            return len(self.accepted)

    def message_ids(self) -> dict[str, set[str | None]]:
        """The Message-IDs each recipient's accepted copies carried."""
        ids: dict[str, set[str | None]] = {}
        with self.lock:
            for message in self.accepted:
                for recipient in message.recipients:
                    ids.setdefault(recipient, set()).add(message.message_id)
        return ids

    def faults(self) -> list[Injected]:
        with self.lock:
            return list(self.injected)

    # -- the protocol ----------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self.lock:
            self.connections += 1
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: nothing was accepted
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: bytes) -> None:
            writer.write(line + b"\r\n")

        reply(b"220 " + _HOSTNAME + b" ESMTP fault injector")
        await writer.drain()
        sender: str | None = None
        recipients: list[str] = []
        started = 0.0
        while line := await reader.readline():
            verb, _, argument = line.rstrip(b"\r\n").partition(b" ")
            verb = verb.upper()
            if verb == b"EHLO":
                for extension in (b"-" + _HOSTNAME, b"-8BITMIME", b"-SMTPUTF8", b"-PIPELINING"):
                    reply(b"250" + extension)
                if self.chunking:
                    reply(b"250-CHUNKING")
                reply(b"250 ENHANCEDSTATUSCODES")
            elif verb == b"HELO":
                reply(b"250 " + _HOSTNAME)
            elif verb == b"MAIL":
                sender, recipients, started = _address(argument), [], time.monotonic()
                reply(b"250 2.1.0 Ok")
            elif verb == b"RCPT":
                if sender is None:
                    reply(b"503 5.5.1 MAIL first")
                else:
                    recipients.append(_address(argument))
                    reply(b"250 2.1.5 Ok")
            elif verb == b"DATA":
                if not recipients:
                    reply(b"503 5.5.1 RCPT first")
                elif not await self._data(reader, writer, recipients, started, None):
                    return  # the fault ended the connection
                sender, recipients = None, []
            elif verb == b"BDAT" and self.chunking:
                size, _, last = argument.partition(b" ")
                if not size.isdigit() or last.upper() != b"LAST":
                    reply(b"504 5.5.4 only one chunk per message (BDAT size LAST) here")
                    return
                if not recipients:
                    await reader.readexactly(int(size))  # RFC 3030: the chunk is read anyway
                    reply(b"503 5.5.1 RCPT first")
                elif not await self._data(reader, writer, recipients, started, int(size)):
                    return
                sender, recipients = None, []
            elif verb == b"RSET":
                sender, recipients = None, []
                reply(b"250 2.0.0 Ok")
            elif verb == b"NOOP":
                reply(b"250 2.0.0 Ok")
            elif verb == b"QUIT":
                reply(b"221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                reply(b"502 5.5.2 Command not recognised")
            await writer.drain()

    async def _data(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        recipients: list[str],
        started: float,
        size: int | None,
    ) -> bool:
        """One message after DATA, or in a chunk of ``size`` bytes after BDAT; False when its
        fault closed the connection."""
        with self.lock:
            self._number += 1
            number = self._number
            self._attempts[recipients[0]] += 1
            attempt = self._attempts[recipients[0]]
        fault = self.plan(number, recipients[0], attempt)
        injected = None
        if fault is not Fault.NONE:
            injected = Injected(number, recipients[0], attempt, fault, started)
            with self.lock:
                self.injected.append(injected)
        if size is None:
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            await writer.drain()

        if fault is Fault.RESET_MID_DATA:
            await reader.read(1024)  # part of the body has arrived; the rest never will
            _reset(writer)
            assert injected is not None
            injected.released = time.monotonic()
            return False

        if size is None:
            data = (await reader.readuntil(_TERMINATOR))[: -len(_TERMINATOR) + 2]
            data = data.replace(b"\r\n..", b"\r\n.")
        else:
            data = await reader.readexactly(size)
        if fault is Fault.HANG_AFTER_DATA:
            assert injected is not None
            while await reader.read(65536):  # never answer; wait for the client to give up
                pass
            injected.released = time.monotonic()
            return False
        if fault is Fault.REPLY_421_CLOSE:
            assert injected is not None
            writer.write(b"421 4.3.2 Service shutting down, closing transmission channel\r\n")
            await writer.drain()
            writer.close()
            injected.released = time.monotonic()
            return False

        if fault is Fault.ACCEPT_WITHOUT_REPLY:
            assert injected is not None
            self._accept(number, recipients, data, started, time.monotonic())
            self.unanswered.put(writer.get_extra_info("peername")[1])
            while await reader.read(65536):  # the sender dies (or gives up) waiting for a reply
                pass
            injected.released = time.monotonic()
            return False

        wait = self.slow_seconds if fault is Fault.SLOW_REPLY else self.delay
        if wait:
            await asyncio.sleep(wait)
        if reader.at_eof():  # the client gave up while we dawdled: nothing was accepted
            if injected is not None:
                injected.released = time.monotonic()
            return False
        replied = time.monotonic()
        self._accept(number, recipients, data, started, replied)  # before the client can know
        writer.write(f"250 2.0.0 Ok: queued as {number}\r\n".encode())
        if injected is not None:
            injected.released = replied
        return True

    def _accept(
        self, number: int, recipients: list[str], data: bytes, started: float, replied: float
    ) -> None:
        message_id = _message_id(data)
        with self.lock:
            self.accepted.append(Accepted(number, tuple(recipients), message_id, started, replied))
