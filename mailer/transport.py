"""SMTP delivery: the only module in the project that imports :mod:`smtplib`.

* :class:`Transport` is the seam. :class:`SmtpTransport` talks to a real server over one reused
  connection; :class:`MemoryTransport` records messages for unit tests of the delivery logic.
* :func:`classify` is the one rule that turns an SMTP reply into an :class:`Outcome`
  (:mod:`mailer.smtp_reply`; re-exported here, as :class:`SendResult` is).
* :class:`SmtpConfig` (``MAILER_SMTP_URL``; parsed in :mod:`mailer.smtp_config`) is re-exported.

``send()`` never raises for network trouble: every smtplib, socket and ssl failure comes back
as a :class:`SendResult`, so a worker records it per recipient and moves on (DESIGN §2.4-5).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from functools import cache
from typing import Any, Protocol

from mailer.deadline import Deadline
from mailer.smtp_config import SmtpConfig as SmtpConfig  # re-exported: part of this seam
from mailer.smtp_reply import Outcome as Outcome
from mailer.smtp_reply import SendResult as SendResult
from mailer.smtp_reply import classify as classify
from mailer.smtp_reply import enhanced_status as enhanced_status

log = logging.getLogger(__name__)

NO_SMTPUTF8 = "recipient needs SMTPUTF8 but the server does not offer it"
# ssl.SSLError, socket.timeout and socket.gaierror are all OSErrors.
_NETWORK_ERRORS = (smtplib.SMTPException, OSError)
_Reply = tuple[int, bytes]
# A connection that answered this recently is not one the server dropped for idling, so BDAT
# may put the message on it at once. After a pause the message waits for DATA's 354 instead:
# if the connection turns out dead, nothing of it was sent and it can be retried at once.
_BUSY_SECONDS = 1.0


class Transport(Protocol):
    """The seam between the delivery logic and the mail server."""

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        """Offer one message to one recipient; never raises for network trouble."""
        ...

    @property
    def eightbitmime(self) -> bool:
        """Whether the server accepts 8-bit bodies (connects if it is not known yet)."""
        ...

    def close(self) -> None:
        """Say goodbye; the transport may be used again afterwards."""
        ...


def _content(smtp: smtplib.SMTP, data: bytes) -> _Reply:
    """Send the message after a 354 and read the reply, with the dot-stuffing done by
    ``bytes.replace``: smtplib's regex costs about 120 µs on a 38 KB digest, a third of a
    send's CPU."""
    stuffed = data.replace(b"\n.", b"\n..")  # what smtplib's (?m)^\. regex does
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    smtp.send(stuffed + b".\r\n")
    return smtp.getreply()


def _data(smtp: smtplib.SMTP, data: bytes) -> _Reply:
    """``smtp.data(data)`` for CRLF bytes (see :func:`_content`)."""
    code, reply = smtp.docmd("data")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    return _content(smtp, data)


class _GuardedSMTP(smtplib.SMTP):
    """smtplib.SMTP that hands its socket to the deadline as soon as it exists, so even a
    trickled greeting is cut off. Connects in the constructor, as smtplib does: only that
    path records the host name that TLS checks the certificate against."""

    def __init__(self, guard: Deadline, host: str, port: int, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.guard.watch(sock)
        self.guard.phase = "waiting for the greeting"
        return sock


class _GuardedSMTPS(_GuardedSMTP, smtplib.SMTP_SSL):
    """Implicit TLS (smtps://) with the same guard."""


@cache
def _fqdn() -> str:
    # getfqdn() may hit DNS: once per process, not once per connection.
    return socket.getfqdn()


class SmtpTransport:
    """A :class:`Transport` over one reused SMTP connection (not thread-safe: one per worker).

    The constructor does not connect (workers create it after the fork); the first send does.
    Per message it runs MAIL, RCPT and DATA itself, so the reply of the failing step is known,
    under an overall deadline of ``config.message_timeout`` seconds.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.connections = 0  # connections opened so far (for metrics and tests)
        self._smtp: _GuardedSMTP | None = None
        self._eightbitmime: bool | None = None
        self._tls: ssl.SSLContext | None = None
        self._guard = Deadline()
        self._answered_at = 0.0  # when the server last replied to a message
        # The thread references only the guard, so it stops when the transport is collected.
        weakref.finalize(self, self._guard.stop)

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        """Offer ``data`` (CRLF line endings) to ``recipient``; see the module docstring."""
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if any(c in address for address in (sender, recipient) for c in "\r\n<>"):
            raise ValueError("an envelope address contains CR, LF or an angle bracket")
        utf8 = smtputf8 or not (sender.isascii() and recipient.isascii())
        deadline = time.monotonic() + self.config.message_timeout
        self._guard.arm(deadline, self.config.message_timeout)
        try:
            result = self._attempt(sender, recipient, data, utf8, deadline, may_retry=True)
            if result is None:  # an idle connection was dropped before MAIL FROM: try once more
                log.info("SMTP connection dropped while idle; reconnecting")
                result = self._attempt(sender, recipient, data, utf8, deadline, may_retry=False)
            assert result is not None
            self._answered_at = time.monotonic()
            return result
        finally:
            if self._guard.disarm():  # fired after the last check: the socket is shut
                self._discard()

    @property
    def eightbitmime(self) -> bool:
        """Whether the server offers 8BITMIME: remembered from the last connection, else
        connects to find out (False when it cannot connect; the send will report why)."""
        if self._smtp is None and self._eightbitmime is None:
            deadline = time.monotonic() + self.config.connect_timeout
            self._guard.arm(deadline, self.config.connect_timeout)
            try:
                self._connect(deadline)
            except _NETWORK_ERRORS as exc:
                log.warning("cannot reach the SMTP server to check 8BITMIME: %s", exc)
            finally:
                self._guard.disarm()
        return bool(self._eightbitmime)

    def close(self) -> None:
        """QUIT politely (errors ignored); the next send reconnects."""
        if self._smtp is None:
            return
        self._guard.arm(time.monotonic() + self.config.connect_timeout, self.config.connect_timeout)
        try:
            with suppress(*_NETWORK_ERRORS):
                self._smtp.quit()
        finally:
            self._guard.disarm()
            self._discard()

    def _attempt(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        utf8: bool,
        deadline: float,
        *,
        may_retry: bool,
    ) -> SendResult | None:
        reused = self._smtp is not None
        try:
            smtp = self._smtp or self._connect(deadline)
        except _NETWORK_ERRORS as exc:
            self._discard()
            return replace(self._failure(exc), server_fault=True)
        try:
            options = []
            if utf8:
                if not smtp.has_extn("smtputf8"):
                    return SendResult(Outcome.PERMANENT, None, NO_SMTPUTF8, None)
                options.append("SMTPUTF8")
            if (utf8 or not data.isascii()) and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            # smtplib switches to UTF-8 commands for SMTPUTF8 but never switches back.
            smtp.command_encoding = "utf-8" if utf8 else "ascii"
            assert smtp.sock is not None
            smtp.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            retry = reused and may_retry
            if self.config.pipelining and smtp.has_extn("pipelining"):
                busy = not reused or time.monotonic() - self._answered_at < _BUSY_SECONDS
                if self.config.chunking and busy and smtp.has_extn("chunking"):
                    return self._chunked(smtp, sender, recipient, data, options)
                return self._pipelined(smtp, sender, recipient, data, options, may_retry=retry)
            return self._stepwise(smtp, sender, recipient, data, options, may_retry=retry)
        except _NETWORK_ERRORS as exc:
            self._discard()
            return self._failure(exc)

    def _stepwise(
        self,
        smtp: smtplib.SMTP,
        sender: str,
        recipient: str,
        data: bytes,
        options: list[str],
        *,
        may_retry: bool,
    ) -> SendResult | None:
        """MAIL, RCPT and DATA, each waiting for its reply: four round trips per message."""
        guard = self._guard
        first = self._first_reply(lambda: smtp.mail(sender, options), may_retry)
        if first is None:
            return None
        code, reply = first
        if code // 100 != 2:
            return self._refused(smtp, code, reply)
        guard.phase = "waiting for the reply to RCPT TO"
        code, reply = self._check_deadline(smtp.rcpt(recipient))
        if code // 100 != 2:
            return self._refused(smtp, code, reply)
        guard.phase = "waiting for the reply to DATA"
        try:
            # Never retried from here on: the server may have accepted it.
            code, reply = self._check_deadline(_data(smtp, data))
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            self._check_deadline()
            return self._refused(smtp, exc.smtp_code, exc.smtp_error)
        return self._accepted_or_not(code, reply)

    def _pipelined(
        self,
        smtp: smtplib.SMTP,
        sender: str,
        recipient: str,
        data: bytes,
        options: list[str],
        *,
        may_retry: bool,
    ) -> SendResult | None:
        """MAIL, RCPT and DATA in one write and their replies in one read (RFC 2920), as
        Postfix does: two round trips per message instead of four, and fewer wake-ups on both
        sides. The replies are then judged in order, as if the commands had gone one by one."""
        guard = self._guard
        extra = "".join(f" {option}" for option in options)
        # Plain angle brackets, not smtplib.quoteaddr: that parses each address with
        # email.utils (~30 µs, a tenth of a send), and both were validated long before.
        smtp.send(f"MAIL FROM:<{sender}>{extra}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
        first = self._first_reply(smtp.getreply, may_retry)
        if first is None:
            return None
        replies = self._replies_after(smtp, first, "DATA")
        if isinstance(replies, SendResult):
            return replies
        refusal = next((reply for reply in replies[:2] if reply[0] // 100 != 2), None)
        data_code = replies[2][0]
        if data_code != 354:
            return self._refused(smtp, *(refusal or replies[2]))
        if refusal is not None:
            # DATA accepted with no valid recipient (RFC 2920 §3.1 lets a server do that): end
            # the empty message at once; it goes nowhere.
            guard.phase = "waiting for the reply to an empty message"
            smtp.send(b".\r\n")
            self._check_deadline(smtp.getreply())
            return self._refused(smtp, *refusal)
        guard.phase = "waiting for the reply to DATA"  # as when sent step by step
        # Never retried from here on: the server may have accepted it.
        code, reply = self._check_deadline(_content(smtp, data))
        return self._accepted_or_not(code, reply)

    def _chunked(
        self,
        smtp: smtplib.SMTP,
        sender: str,
        recipient: str,
        data: bytes,
        options: list[str],
    ) -> SendResult:
        """MAIL, RCPT and ``BDAT size LAST`` with the message, all in one write (RFC 3030 §4.2
        with RFC 2920), and the three replies in one read: one round trip per message, and no
        dot-stuffing, since BDAT says how many bytes follow. A server refusing MAIL or RCPT
        still reads the chunk and refuses BDAT (RFC 3030 §3), so the replies stay in step.

        Never retried on a lost connection, even before the first reply: the server had the
        whole message and may have accepted it."""
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        extra = "".join(f" {option}" for option in options)
        head = f"MAIL FROM:<{sender}>{extra}\r\nRCPT TO:<{recipient}>\r\nBDAT {len(data)} LAST\r\n"
        smtp.send(head.encode(smtp.command_encoding) + data)
        self._guard.phase = "waiting for the reply to MAIL FROM"
        replies = self._replies_after(smtp, self._check_deadline(smtp.getreply()), "BDAT")
        if isinstance(replies, SendResult):
            return replies
        refusal = next((reply for reply in replies[:2] if reply[0] // 100 != 2), None)
        if refusal is not None:  # the chunk was refused with it (503 or 554): nothing went out
            return self._refused(smtp, *refusal)
        # Not retried: the server may have accepted it.
        return self._accepted_or_not(*replies[2])

    def _replies_after(
        self, smtp: smtplib.SMTP, first: _Reply, last: str
    ) -> list[_Reply] | SendResult:
        """MAIL FROM's reply ``first``, then the replies to RCPT TO and to ``last`` of one
        pipelined group; the result at once when the server says 421 (it is closing the
        connection: no further replies will come)."""
        replies = [first]
        for command in ("RCPT TO", last):
            if replies[-1][0] == 421:
                self._discard()
                return SendResult.from_reply(*replies[-1])
            self._guard.phase = f"waiting for the reply to {command}"
            replies.append(self._check_deadline(smtp.getreply()))
        return replies

    def _first_reply(self, read: Callable[[], _Reply], may_retry: bool) -> _Reply | None:
        """The reply to MAIL FROM, or None when a reused connection turns out to have been
        dropped while idle: nothing of this message was accepted, so a retry on a new
        connection cannot duplicate it."""
        self._guard.phase = "waiting for the reply to MAIL FROM"
        try:
            return self._check_deadline(read())
        except smtplib.SMTPServerDisconnected as exc:
            if may_retry and not self._timed_out(exc):
                self._discard()
                return None
            raise

    def _accepted_or_not(self, code: int, reply: bytes) -> SendResult:
        if code == 421:
            self._discard()
        return SendResult.from_reply(code, reply)

    def _timed_out(self, exc: BaseException) -> bool:
        # The socket timeout (set to the time left) may beat the watchdog to it; smtplib then
        # reports "Connection unexpectedly closed: timed out", chained to the TimeoutError.
        return (
            self._guard.fired
            or isinstance(exc, TimeoutError)
            or isinstance(exc.__context__, TimeoutError)
        )

    def _check_deadline(self, reply: _Reply = (0, b"")) -> _Reply:
        """Pass the reply through unless the deadline fired: the shutdown makes smtplib read
        a reply cut short ("25" of a trickled "250 ...") as if it were whole."""
        if self._guard.fired:
            raise TimeoutError("the deadline passed")
        return reply

    def _refused(self, smtp: smtplib.SMTP, code: int, reply: bytes | str) -> SendResult:
        """A refusal before the message was accepted: RSET so the connection can be reused,
        except after 421, when the server is closing it anyway."""
        result = SendResult.from_reply(code, reply)
        if code == 421:
            self._discard()
            return result
        self._guard.phase = "waiting for the reply to RSET"
        try:
            smtp.rset()
        except _NETWORK_ERRORS:
            self._discard()
        return result

    def _failure(self, exc: BaseException) -> SendResult:
        """Describe a network failure as a temporary result."""
        guard, cfg = self._guard, self.config
        if self._timed_out(exc):
            return SendResult.temporary(f"timed out after {guard.limit:g} s {guard.phase}")
        if isinstance(exc, ConnectionRefusedError):
            return SendResult.temporary(f"connection refused by {cfg.host}:{cfg.port}")
        if isinstance(exc, socket.gaierror):
            return SendResult.temporary(f"cannot resolve {cfg.host}: {exc.strerror}")
        if isinstance(exc, smtplib.SMTPResponseException):
            # Refused at the greeting, EHLO, STARTTLS or AUTH: a problem of the session, not of
            # this recipient, so it never condemns the address even when it is a 5xx.
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return SendResult.temporary(f"{text} ({guard.phase})", exc.smtp_code)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return SendResult.temporary(f"connection lost {guard.phase}: {exc}")
        return SendResult.temporary(f"{type(exc).__name__} {guard.phase}: {exc}")

    def _connect(self, deadline: float) -> _GuardedSMTP:
        """Open, greet, EHLO, STARTTLS, log in. Bounded by the connect timeout (or by the
        message deadline if that comes first); raises network errors."""
        cfg, guard = self.config, self._guard
        now = time.monotonic()
        if now + cfg.connect_timeout < deadline:
            guard.arm(now + cfg.connect_timeout, cfg.connect_timeout)
            phase_deadline = now + cfg.connect_timeout
        else:
            phase_deadline = deadline
        timeout = max(phase_deadline - now, 0.001)
        options: dict[str, Any] = {"local_hostname": cfg.local_hostname or _fqdn()}
        if cfg.ssl:
            options["context"] = self._tls_context()
        guard.phase = f"connecting to {cfg.host}:{cfg.port}"
        smtp: _GuardedSMTP | None = None
        try:
            smtp = (_GuardedSMTPS if cfg.ssl else _GuardedSMTP)(
                guard, cfg.host, cfg.port, timeout=timeout, **options
            )
            guard.phase = "waiting for the reply to EHLO"
            smtp.ehlo_or_helo_if_needed()
            if cfg.starttls:
                guard.phase = "waiting for the reply to STARTTLS"
                smtp.starttls(context=self._tls_context())
                guard.watch(smtp.sock)  # the TLS socket replaces the plain one
                guard.phase = "waiting for the reply to EHLO"
                smtp.ehlo_or_helo_if_needed()
            if cfg.username:
                guard.phase = "waiting for the reply to AUTH"
                smtp.login(cfg.username, cfg.password or "")
            self._check_deadline()
        except BaseException:
            guard.watch(None)
            if smtp is not None:  # (smtplib closes it itself when connecting fails)
                smtp.close()
            raise
        guard.arm(deadline, cfg.message_timeout)
        self._smtp, self._eightbitmime = smtp, smtp.has_extn("8bitmime")
        self.connections += 1
        return smtp

    def _discard(self) -> None:
        """Forget the connection (after a timeout, a 421 or a network error)."""
        smtp, self._smtp = self._smtp, None
        self._guard.watch(None)
        if smtp is not None:
            with suppress(OSError):
                smtp.close()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
            if not self.config.verify_tls:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE
        return self._tls


Script = Mapping[str, SendResult] | Callable[[str], SendResult]
_ACCEPTED = SendResult(Outcome.SENT, 250, "2.0.0 OK", "2.0.0")


class MemoryTransport:
    """An in-memory :class:`Transport` for unit tests of the delivery logic (no sockets).

    Every call is recorded in ``attempts``; accepted ones also in ``sent``, as
    ``(sender, recipient, data)``. ``script`` (a dict or a callable, by recipient) decides the
    result; unscripted recipients are accepted.
    """

    def __init__(
        self, script: Script | None = None, *, eightbitmime: bool = True, smtputf8: bool = True
    ) -> None:
        self.script = script
        self.smtputf8 = smtputf8
        self.sent: list[tuple[str, str, bytes]] = []
        self.attempts: list[tuple[str, str, bytes]] = []
        self.closed = 0
        self._eightbitmime = eightbitmime

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self.attempts.append((sender, recipient, data))
        if smtputf8 and not self.smtputf8:
            return SendResult(Outcome.PERMANENT, None, NO_SMTPUTF8, None)
        if callable(self.script):
            result = self.script(recipient)
        else:
            result = (self.script or {}).get(recipient, _ACCEPTED)
        if result.outcome is Outcome.SENT:
            self.sent.append((sender, recipient, data))
        return result

    @property
    def eightbitmime(self) -> bool:
        return self._eightbitmime

    def close(self) -> None:
        self.closed += 1
