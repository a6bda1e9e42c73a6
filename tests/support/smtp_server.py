"""Real SMTP servers for tests, running in the pytest process (Mailman's approach).

:class:`ScriptedSMTPServer` is an aiosmtpd server on 127.0.0.1 and an OS-chosen port that
records what it receives and can be told to refuse chosen recipients with chosen codes, at
RCPT or after DATA, to hang, to drop connections. :class:`TricklingSMTPServer` is a tiny raw
server that answers the greeting and EHLO, then trickles every other reply one byte at a
time: smtplib's per-operation timeout never trips on it, only an overall deadline does.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from functools import cache
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailer.sink import SinkController, TrackedSMTP

Rule = Callable[[str, int], "tuple[int, str] | None"]
"""Called with (recipient, attempt number for that recipient, from 1); (code, text) refuses."""

DROP = 0
"""A rule answering ``(DROP, "")`` makes the server close the connection without replying."""

_DROP_REPLY = "\x00drop"
_HOSTNAME = "scripted-smtp.test"


@dataclass
class Received:
    """One accepted message."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str | None
    mail_options: list[str] = field(default_factory=list)


def _message_id(data: bytes) -> str | None:
    value = BytesHeaderParser().parsebytes(data).get("Message-ID")
    return str(value).strip() if value is not None else None


def _reply(answer: tuple[int, str]) -> str:
    code, text = answer
    return _DROP_REPLY if code == DROP else f"{code} {text}"


class _ScriptedSMTP(TrackedSMTP):
    """aiosmtpd's SMTP with the server's hang/drop switches, and a real server's habit of
    closing the connection after a 421."""

    def __init__(
        self, owner: ScriptedSMTPServer, live: set[SMTP], handler: Any, **kwargs: Any
    ) -> None:
        super().__init__(live, handler, **kwargs)
        self._owner = owner

    async def push(self, status: Any) -> None:
        while self._owner._hanging:  # hang: the peer waits for a reply that does not come
            await asyncio.sleep(0.02)
        text = status.decode() if isinstance(status, bytes) else status
        if text == _DROP_REPLY:
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)
        if text.startswith("421") and self.transport is not None:
            self.transport.close()


class _Handler:
    def __init__(self, owner: ScriptedSMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves this to a handle_EHLO hook
        owner = self.owner
        with owner._lock:
            owner.commands.append("EHLO")
            owner.ehlo_count += 1
            # Marked on the protocol object: STARTTLS starts a new session, not a connection.
            if not getattr(server, "counted", False):
                server.counted = True
                owner.connections += 1
        if owner.pipelining:  # aiosmtpd reads pipelined commands fine but never says so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.owner._log("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        answer = self.owner._ask("RCPT", address)
        if answer is not None:
            return _reply(answer)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.owner._log("RSET")
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner.delay:  # a slow server: each message takes this long to accept
            await asyncio.sleep(self.owner.delay)
        answer = self.owner._ask("DATA", envelope.rcpt_tos[0])
        if answer is not None:
            return _reply(answer)
        data: bytes = envelope.original_content
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            data,
            _message_id(data),
            list(envelope.mail_options),
        )
        with self.owner._lock:
            self.owner.received.append(received)
        return "250 2.0.0 OK queued"


class _Controller(SinkController):
    def __init__(self, owner: ScriptedSMTPServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self.owner = owner

    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.owner, self.live, self.handler, **self.SMTP_kwargs)


class ScriptedSMTPServer:
    """A real SMTP server in a thread that answers what the test tells it to.

    ``received``, ``commands`` (verbs in arrival order), ``connections`` (sessions that said
    EHLO, so aiosmtpd's own start-up probe is not counted) and ``ehlo_count`` are updated
    under a lock. Also a context manager.

    ``tls`` offers STARTTLS with a self-signed certificate (``implicit_tls``: TLS from the
    first byte, as for smtps://); ``users`` (login → password) requires AUTH; ``pipelining``
    advertises PIPELINING (RFC 2920), as Postfix does.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        smtputf8: bool = True,
        tls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        pipelining: bool = False,
    ) -> None:
        self.host, self.port, self.smtputf8 = host, port, smtputf8
        self.pipelining = pipelining
        self.tls, self.implicit_tls, self.users = tls, implicit_tls, users
        self.received: list[Received] = []
        self.commands: list[str] = []
        self.connections = 0
        self.ehlo_count = 0
        self.delay = 0.0
        self._lock = threading.Lock()
        self._rule: Rule | None = None
        self._data_rule: Rule | None = None
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._hanging = False
        self._controller: _Controller | None = None

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"

    def start(self) -> None:
        """Start listening (again, on the same port after a stop)."""
        options: dict[str, Any] = {}
        if self.implicit_tls:
            options["ssl_context"] = server_tls_context()
        elif self.tls:
            options["tls_context"] = server_tls_context()
        if self.users is not None:
            # aiosmtpd cannot tell that an implicit-TLS connection is encrypted, and warns
            # when AUTH is required without TLS: there it offers AUTH without requiring it.
            options.update(
                authenticator=self._authenticate,
                auth_required=not self.implicit_tls,
                auth_require_tls=not self.implicit_tls,
            )
        controller = _Controller(
            self,
            hostname=self.host,
            port=self.port,
            server_hostname=_HOSTNAME,
            enable_SMTPUTF8=self.smtputf8,
            **options,
        )
        controller.start()
        self.port, self._controller = controller.port, controller

    def stop(self) -> None:
        """Cut every open connection and stop listening."""
        self._hanging = False
        if self._controller is not None:
            self._controller.stop()  # also closes the open connections
            self._controller = None

    def __enter__(self) -> ScriptedSMTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget what was received and counted (rules stay)."""
        with self._lock:
            self.received.clear()
            self.commands.clear()
            self._attempts.clear()
            self.connections = self.ehlo_count = 0

    def set_rule(self, rule: Rule | None) -> None:
        """Decide each RCPT: ``rule(recipient, attempt)`` returns (code, text) to refuse."""
        self._rule = rule

    def set_data_rule(self, rule: Rule | None) -> None:
        """Decide the reply after DATA the same way (first recipient, attempt at DATA)."""
        self._data_rule = rule

    def hang(self, enabled: bool) -> None:
        """While enabled, never reply: not the greeting, not the next command."""
        self._hanging = enabled

    def drop_connections(self) -> None:
        """Close every open connection, as servers do to idle clients; returns once they are
        closed, so the client's next command surely meets a closed connection."""
        if self._controller is not None:
            self._controller.close_connections()

    def message_ids(self) -> list[str]:
        with self._lock:
            return [r.message_id for r in self.received if r.message_id is not None]

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self._log("AUTH")
        ok = (
            isinstance(data, LoginPassword)
            and self.users is not None
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535

    def _log(self, verb: str) -> None:
        with self._lock:
            self.commands.append(verb)

    def _ask(self, verb: str, recipient: str) -> tuple[int, str] | None:
        with self._lock:
            self.commands.append(verb)
            self._attempts[verb, recipient] += 1
            attempt = self._attempts[verb, recipient]
        rule = self._rule if verb == "RCPT" else self._data_rule
        return rule(recipient, attempt) if rule is not None else None

    @staticmethod
    def refuse(
        code: int,
        text: str,
        *,
        until_attempt: int | None = None,
        recipients: set[str] | None = None,
    ) -> Rule:
        """A rule refusing ``recipients`` (all when None) up to ``until_attempt`` (always when
        None), then accepting them."""

        def rule(recipient: str, attempt: int) -> tuple[int, str] | None:
            if recipients is not None and recipient not in recipients:
                return None
            if until_attempt is not None and attempt > until_attempt:
                return None
            return code, text

        return rule

    @staticmethod
    def fail_fraction(fraction: float, code: int, text: str, *, until_attempt: int = 1) -> Rule:
        """A rule refusing a stable ``fraction`` of recipients (chosen by a hash of the
        address, so the same ones on every run) up to ``until_attempt``."""

        def rule(recipient: str, attempt: int) -> tuple[int, str] | None:
            chosen = zlib.crc32(recipient.encode()) % 10_000 < fraction * 10_000
            return (code, text) if chosen and attempt <= until_attempt else None

        return rule


@cache
def server_tls_context() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain only reads files
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_file, key_file)
    return context


class TricklingSMTPServer:
    """Greets, answers EHLO, then sends every other reply one byte per ``interval`` seconds
    (forever), so no single socket read ever waits long enough to time out."""

    def __init__(self, interval: float = 0.3) -> None:
        self.interval = interval
        self.host, self.port = "127.0.0.1", 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, self.host, 0), self._loop
        )
        self._server = future.result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> TricklingSMTPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            writer.write(b"220 trickle.test ESMTP\r\n")
            while line := await reader.readline():
                if line[:4].upper() in (b"EHLO", b"HELO"):
                    writer.write(b"250 trickle.test\r\n")
                    continue
                for byte in b"250 " + b"." * 10_000:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(self.interval)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
