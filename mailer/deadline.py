"""The per-message deadline of an SMTP exchange, kept by one watchdog thread per transport.

smtplib's timeout applies to each socket operation, so a server that trickles a byte now and then
never trips it (DESIGN §7). :class:`Deadline` shuts the socket down when the whole exchange
overruns; whatever call is blocked on it then fails at once.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress


def shutdown(sock: socket.socket) -> None:
    # The base-class method on purpose: SSLSocket.shutdown() drops its SSL object while the
    # other thread may still be reading through it.
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """The per-message deadline, enforced by one long-lived daemon thread per transport.

    Arming only stores a deadline and notifies a
    Condition, so it costs no thread per message; when the deadline passes, the thread shuts
    the watched socket down and whatever call is blocked on it fails at once. ``phase`` and
    ``limit`` say what was being waited for, for the error text.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None
        self._sock: socket.socket | None = None
        self._stopped = False
        self.fired = False
        self.limit = 0.0
        self.phase = ""
        self._sleeping_until: float | None = None  # what the watchdog waits for (None: nothing)

    def arm(self, deadline: float, limit: float) -> None:
        with self._cond:
            # is_alive() is also False in a forked child, which then gets its own thread.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="smtp-deadline", daemon=True)
                self._thread.start()
            self._deadline, self.limit, self.fired = deadline, limit, False
            # Deadlines only move later, so the watchdog, asleep until an earlier one, wakes
            # in time by itself: a notify (a thread switch) per message is needed only when
            # it sleeps with no deadline at all.
            if self._sleeping_until is None or deadline < self._sleeping_until:
                self._cond.notify()

    def disarm(self) -> bool:
        """Stop watching the clock; True if the deadline fired (the socket is unusable)."""
        with self._cond:
            self._deadline = None
            return self.fired

    def watch(self, sock: socket.socket | None) -> None:
        """Guard this socket from now on (None before closing it, so no stale fd is shut)."""
        with self._cond:
            self._sock = sock
            if sock is not None and self.fired:
                shutdown(sock)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._sleeping_until = None
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._sleeping_until = self._deadline
                    self._cond.wait(remaining)
                    continue
                self.fired, self._deadline = True, None
                if self._sock is not None:
                    shutdown(self._sock)
