"""Sending rates: one limit shared by every worker, one per SMTP server, one per recipient
domain; a server that says "slow down" (421/450/454) gets half its rate for a while, then
recovers additively.

Buckets live in a :class:`RateStore` shared by every sending process: Redis in production
(``workers.redis_rates``), a small SQLite file in the embedded default, memory in unit tests.
Each send *reserves* a token and sleeps until it is due (tokens may go negative), so N
processes together keep the configured rate instead of racing for the next free token.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

from mailer.config import Settings

SLOW_DOWN_CODES = frozenset({421, 450, 454})
HOLD_SECONDS = 5.0  # how long a halved rate holds before it starts to recover
RECOVERY_PER_SECOND = 0.1  # additive increase: a tenth of the original rate per second
FLOOR = 0.5  # messages per second: never slower than this


class RateStore(Protocol):
    def reserve(self, key: str, rate: float, burst: float) -> float:
        """Take one token from ``key``'s bucket; return the seconds to wait before using it."""

    def get_state(self, key: str) -> dict[str, float] | None: ...

    def set_state(self, key: str, state: dict[str, float] | None) -> None: ...

    def hold_slot(self, key: str, owner: str, limit: int, ttl: float) -> bool:
        """Keep (or take) one of ``limit`` slots for ``owner`` for ``ttl`` seconds."""

    def release_slot(self, key: str, owner: str) -> None: ...


def _hold(slots: dict[str, float], owner: str, limit: int, now: float, ttl: float) -> bool:
    for other in [o for o, expires in slots.items() if expires <= now]:
        del slots[other]  # a process that died without releasing: its slot lapses
    if owner in slots or len(slots) < limit:
        slots[owner] = now + ttl
        return True
    return False


def _reserve(tokens: float, stamp: float, now: float, rate: float, burst: float) -> float:
    """The bucket's tokens after taking one (negative: a debt paid by waiting)."""
    return min(burst, tokens + max(0.0, now - stamp) * rate) - 1.0


class MemoryRateStore:
    """One process's buckets (unit tests, or a single sending process)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._states: dict[str, dict[str, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def hold_slot(self, key: str, owner: str, limit: int, ttl: float) -> bool:
        with self._lock:
            return _hold(self._slots.setdefault(key, {}), owner, limit, self.clock(), ttl)

    def release_slot(self, key: str, owner: str) -> None:
        with self._lock:
            self._slots.get(key, {}).pop(owner, None)

    def reserve(self, key: str, rate: float, burst: float) -> float:
        with self._lock:
            now = self.clock()
            tokens, stamp = self._buckets.get(key, (burst, now))
            left = _reserve(tokens, stamp, now, rate, burst)
            self._buckets[key] = (left, now)
        return 0.0 if left >= 0 else -left / rate

    def get_state(self, key: str) -> dict[str, float] | None:
        with self._lock:
            return self._states.get(key)

    def set_state(self, key: str, state: dict[str, float] | None) -> None:
        with self._lock:
            if state is None:
                self._states.pop(key, None)
            else:
                self._states[key] = state


class SqliteRateStore:
    """Buckets shared by the worker processes of one host, in a small SQLite file (embedded
    default). ``BEGIN IMMEDIATE`` makes each reservation atomic across processes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._db = sqlite3.connect(
            str(path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL, stamp REAL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS slots (key TEXT PRIMARY KEY, value TEXT)")
        self._lock = threading.Lock()

    def reserve(self, key: str, rate: float, burst: float) -> float:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = self.clock()
                row = self._db.execute(
                    "SELECT tokens, stamp FROM buckets WHERE key = ?", (key,)
                ).fetchone()
                tokens, stamp = row if row else (burst, now)
                left = _reserve(tokens, stamp, now, rate, burst)
                self._db.execute(
                    "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?)", (key, left, now)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return 0.0 if left >= 0 else -left / rate

    def hold_slot(self, key: str, owner: str, limit: int, ttl: float) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM slots WHERE key = ?", (key,)).fetchone()
                slots: dict[str, float] = json.loads(row[0]) if row else {}
                held = _hold(slots, owner, limit, self.clock(), ttl)
                self._db.execute(
                    "INSERT OR REPLACE INTO slots VALUES (?, ?)", (key, json.dumps(slots))
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return held

    def release_slot(self, key: str, owner: str) -> None:
        self.hold_slot(key, owner, 1 << 30, -1.0)  # an expiry in the past frees it

    def get_state(self, key: str) -> dict[str, float] | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM states WHERE key = ?", (key,)).fetchone()
        return cast(dict[str, float], json.loads(row[0])) if row else None

    def set_state(self, key: str, state: dict[str, float] | None) -> None:
        with self._lock:
            if state is None:
                self._db.execute("DELETE FROM states WHERE key = ?", (key,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO states VALUES (?, ?)", (key, json.dumps(state))
                )


def load_store(settings: Settings) -> RateStore:
    """The store for this deployment: Redis when the broker is Redis, else the SQLite file."""
    path = settings.rate_store or (
        "workers.redis_rates:RedisRateStore" if settings.broker.startswith("redis") else ""
    )
    if not path:
        return SqliteRateStore(settings.data_dir.resolve() / "rates.db")
    module_name, _, attribute = path.partition(":")
    factory: Any = getattr(importlib.import_module(module_name), attribute)
    return cast(RateStore, factory(settings))


@dataclass(frozen=True)
class Warmup:
    """A new IP's reputation is built slowly: the shared rate grows geometrically per day."""

    since: float  # epoch seconds
    start_rate: float
    days: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Warmup | None:
        if not settings.warmup_since:
            return None
        since = datetime.fromisoformat(settings.warmup_since)
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        if settings.warmup_start_rate <= 0 or settings.warmup_days <= 0:
            raise ValueError("MAILER_WARMUP_START_RATE and MAILER_WARMUP_DAYS must be positive")
        return cls(since.timestamp(), settings.warmup_start_rate, settings.warmup_days)

    def rate(self, now: float, target: float) -> float:
        """The allowed rate at ``now``; ``target`` 0 means unlimited once warmed up."""
        goal = target if target > 0 else self.start_rate * 10
        progress = (now - self.since) / (self.days * 86400)
        if progress >= 1:
            return target
        return float(self.start_rate * (goal / self.start_rate) ** max(progress, 0.0))


def burst_for(rate: float) -> float:
    # A tenth of a second's worth: smooth, yet one slow reservation doesn't stall everyone.
    return max(1.0, rate / 10)


class Throttle:
    """Waits for the global, per-server and per-domain turns before each message."""

    def __init__(
        self,
        store: RateStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.global_rate = settings.rate_per_second
        self.warmup = Warmup.from_settings(settings)
        self.domain_rate = settings.domain_rate_per_second
        self.clock = clock
        self.sleep = sleep
        self._recent: dict[str, deque[float]] = {}
        # Slow-down states are read before every message: cache them briefly per process.
        self._states: dict[str, tuple[float, dict[str, float] | None]] = {}

    def _state(self, server: str) -> dict[str, float] | None:
        now = self.clock()
        cached = self._states.get(server)
        if cached is None or now - cached[0] > 0.5:
            cached = (now, self.store.get_state(f"slow:{server}"))
            self._states[server] = cached
        return cached[1]

    def _set_state(self, server: str, state: dict[str, float] | None) -> None:
        self.store.set_state(f"slow:{server}", state)
        self._states[server] = (self.clock(), state)

    def server_rate(self, server: str, configured: float | None) -> float | None:
        """The server's rate now: configured, or halved after a slow-down and recovering."""
        state = self._state(server)
        if state is None:
            return configured
        now = self.clock()
        # Recovery adds a share of the original rate, so even a deep cut heals in ~10 s.
        rate = state["cap"] + state["ceiling"] * RECOVERY_PER_SECOND * max(
            0.0, now - state["since"]
        )
        if rate >= state["ceiling"]:
            self._set_state(server, None)
            return configured
        return rate

    def wait_turn(self, server: str, configured: float | None, domain: str) -> float:
        """Reserve every applicable turn and sleep until the latest is due; returns the wait."""
        waits = [0.0]
        shared = self.global_rate
        if self.warmup is not None:
            shared = self.warmup.rate(self.clock(), self.global_rate)
        if shared > 0:
            waits.append(self.store.reserve("global", shared, burst_for(shared)))
        rate = self.server_rate(server, configured)
        if rate:
            waits.append(self.store.reserve(f"server:{server}", rate, burst_for(rate)))
        if self.domain_rate > 0:
            waits.append(
                self.store.reserve(
                    f"domain:{domain}", self.domain_rate, burst_for(self.domain_rate)
                )
            )
        wait = max(waits)
        if wait > 0:
            self.sleep(wait)
        return wait

    def sent(self, server: str) -> None:
        """Note a success (the observed rate is the base for servers without a set rate)."""
        recent = self._recent.setdefault(server, deque(maxlen=512))
        recent.append(self.clock())

    def observed_rate(self, server: str) -> float:
        recent = self._recent.get(server)
        if not recent or len(recent) < 2:
            return 2 * FLOOR
        span = max(recent[-1] - recent[0], 1e-3)
        return (len(recent) - 1) / span

    def slow_down(self, server: str, configured: float | None) -> float:
        """Halve the server's rate (multiplicative decrease); returns the new rate."""
        current = self.server_rate(server, configured) or self.observed_rate(server)
        state = self._state(server)
        if state is not None and self.clock() < state["since"]:
            return state["cap"]  # one halving per hold: a burst of 421s is one signal
        ceiling = configured or (state["ceiling"] if state else current)
        cap = max(FLOOR, current / 2)
        self._set_state(
            server, {"cap": cap, "since": self.clock() + HOLD_SECONDS, "ceiling": ceiling}
        )
        return cap
