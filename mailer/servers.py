"""Several SMTP servers behind one :class:`mailer.transport.Transport`.

Each server has its own URL, weight and rate. A server whose session fails (connection refused,
greeting or login refused) is taken out for a while and the same message goes at once to the
next one — safe, because nothing of it was sent. Its health is written to ``smtp_servers`` so
``mailer smtp status`` shows it. Rates and slow-downs go through :class:`mailer.throttle.Throttle`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.models import SmtpServer
from mailer.throttle import SLOW_DOWN_CODES, Throttle
from mailer.transport import Outcome, SendResult, SmtpConfig, SmtpTransport, Transport

log = logging.getLogger(__name__)

DOWN_FIRST = 10.0  # seconds out of rotation after a first session failure…
DOWN_MAX = 300.0  # …doubling up to this
SLOT_TTL = 60.0  # a connection slot lapses this long after its process stops renewing it
SLOT_WAIT = 0.2


@dataclass
class Server:
    name: str
    transport: Transport
    weight: int = 1
    rate: float | None = None
    server_id: int | None = None  # the smtp_servers row, if it came from the table
    max_connections: int | None = None  # processes connected at once, across every host
    down_until: float = 0.0
    failures: int = 0
    slot_until: float = 0.0  # this process holds a connection slot until then


HealthHook = Callable[[Server, bool, str], None]


class ServerPool:
    """A Transport that spreads messages over servers by weight, failing over when one is down."""

    def __init__(
        self,
        servers: list[Server],
        throttle: Throttle | None = None,
        *,
        on_health: HealthHook | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not servers:
            raise ValueError("at least one SMTP server is needed")
        self.servers = servers
        self.throttle = throttle
        self.on_health = on_health
        self.clock = clock
        self.rng = rng
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def _order(self) -> list[Server]:
        """Available servers in weighted-random order, then the ones that are down (last resort)."""
        now = self.clock()
        up = [s for s in self.servers if s.down_until <= now]
        ordered: list[Server] = []
        while up:
            total = sum(max(s.weight, 0) for s in up) or len(up)
            pick, acc = self.rng() * total, 0.0
            for server in up:
                acc += max(server.weight, 0) or 1
                if pick < acc:
                    break
            ordered.append(server)
            up.remove(server)
        return ordered + sorted(
            (s for s in self.servers if s.down_until > now), key=lambda s: s.down_until
        )

    def send(
        self, sender: str, recipient: str, data: bytes, *, smtputf8: bool = False
    ) -> SendResult:
        domain = recipient.rsplit("@", 1)[-1].lower()
        result: SendResult | None = None
        order = self._order()
        while True:
            usable = [s for s in order if self._slot(s)]
            if usable:
                break
            time.sleep(SLOT_WAIT)  # every server is at its connection limit: wait for a slot
        for server in usable:
            if self.throttle is not None:
                self.throttle.wait_turn(server.name, server.rate, domain)
            result = server.transport.send(sender, recipient, data, smtputf8=smtputf8)
            if result.server_fault:
                self._down(server, result.text)
                continue  # nothing was sent: the next server may take it now
            self._up(server)
            if self.throttle is not None:
                if result.code in SLOW_DOWN_CODES:
                    rate = self.throttle.slow_down(server.name, server.rate)
                    log.info(
                        "%s asked to slow down (%s): %.1f msg/s", server.name, result.code, rate
                    )
                elif result.outcome == Outcome.SENT:
                    self.throttle.sent(server.name)
            return result
        assert result is not None
        return result

    def _slot(self, server: Server) -> bool:
        """Whether this process may use the server's connection (``max_connections``)."""
        if not server.max_connections or self.throttle is None:
            return True
        now = self.clock()
        if server.slot_until - SLOT_TTL / 2 > now:
            return True  # held, and renewed recently enough
        store = self.throttle.store
        held = store.hold_slot(f"conn:{server.name}", self.owner, server.max_connections, SLOT_TTL)
        if held:
            server.slot_until = now + SLOT_TTL
        else:
            server.slot_until = 0.0
            server.transport.close()  # give the connection back while we cannot hold a slot
        return held

    def _down(self, server: Server, reason: str) -> None:
        server.failures += 1
        pause = min(DOWN_MAX, DOWN_FIRST * 2 ** (server.failures - 1))
        server.down_until = self.clock() + pause
        log.warning("SMTP server %s out of rotation for %.0f s: %s", server.name, pause, reason)
        if self.on_health is not None:
            self.on_health(server, False, reason)

    def _up(self, server: Server) -> None:
        if server.failures:
            server.failures = 0
            server.down_until = 0.0
            if self.on_health is not None:
                self.on_health(server, True, "")

    @property
    def eightbitmime(self) -> bool:
        """8-bit only if every available server takes it (a template serves them all)."""
        now = self.clock()
        up = [s for s in self.servers if s.down_until <= now] or self.servers
        return all(s.transport.eightbitmime for s in up)

    def close(self) -> None:
        for server in self.servers:
            server.transport.close()
            if server.slot_until and self.throttle is not None:
                self.throttle.store.release_slot(f"conn:{server.name}", self.owner)
                server.slot_until = 0.0


def record_health(engine: Engine) -> HealthHook:
    """A hook that writes a table server's health where ``mailer smtp status`` reads it."""

    def hook(server: Server, healthy: bool, reason: str) -> None:
        if server.server_id is None:
            return
        down = None if healthy else datetime.fromtimestamp(server.down_until, UTC)
        with engine.begin() as conn:
            conn.execute(
                update(SmtpServer)
                .where(SmtpServer.id == server.server_id)
                .values(healthy=healthy, down_until=down, last_error=reason[:1000] or None)
            )

    return hook


def load_servers(engine: Engine, settings: Settings) -> list[Server]:
    """Enabled ``smtp_servers`` rows, or the one ``MAILER_SMTP_URL`` when the table is empty."""
    with Session(engine) as session:
        rows = session.scalars(
            select(SmtpServer).where(SmtpServer.enabled.is_(True)).order_by(SmtpServer.id)
        ).all()
    if not rows:
        return [Server("default", SmtpTransport(SmtpConfig.from_url(settings.smtp_url)))]
    return [
        Server(
            name=row.name,
            transport=SmtpTransport(SmtpConfig.from_url(row.url)),
            weight=row.weight,
            rate=row.rate_per_second,
            server_id=row.id,
            max_connections=row.max_connections,
        )
        for row in rows
    ]
