"""Rate limits for the reader pages: per client IP and per address (subscribe).

A :class:`Limiter` counts hits of a key in fixed windows: ``hit(key, "20/hour")`` records one
hit and answers whether the key is still within 20 hits in the current hour. A fixed window
lets a client make up to twice the limit across a window boundary; for throttling sign-up
abuse that is fine, and it needs one counter per key (one ``INCR`` in Redis).

:class:`MemoryLimiter` keeps the counters in the process (the embedded default: one web
process). Production points ``MAILER_LIMITER`` at ``workers.redis_limiter:RedisLimiter`` so
every web process shares them; ``mailer`` itself never imports Redis.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol, cast

from mailer.config import Settings

_PERIODS = {"s": 1, "second": 1, "m": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400}
_PERIODS["day"] = 86400
_LIMIT = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+?)s?\s*", re.IGNORECASE)


class Limiter(Protocol):
    def hit(self, key: str, limit: str) -> bool:
        """Count one hit of ``key``; False when that makes it exceed ``limit`` ("5/minute")."""


@lru_cache(maxsize=64)
def parse_limit(limit: str) -> tuple[int, int]:
    """``"20/hour"`` → ``(20, 3600)``: hits allowed and the window in seconds.

    Accepts ``N/unit`` or ``N per unit`` with an optional multiplier (``"10/5minutes"``);
    units second, minute, hour, day (or s, m, h, d). Raises ValueError otherwise, so a typo
    in ``MAILER_SUBSCRIBE_LIMIT_PER_IP`` fails at start-up rather than disabling the limit.
    """
    match = _LIMIT.fullmatch(limit)
    unit = match.group(3).lower() if match else ""
    if match is None or unit not in _PERIODS:
        raise ValueError(f"rate limit {limit!r} is not like '20/hour' or '5/minute'")
    multiplier = int(match.group(2) or 1)
    if multiplier < 1:
        raise ValueError(f"rate limit {limit!r} has an empty window")
    return int(match.group(1)), multiplier * _PERIODS[unit]


class MemoryLimiter:
    """Thread-safe fixed-window counters in this process.

    At most ``max_keys`` counters are kept: past that, expired ones are dropped first and then
    the oldest, so a flood of distinct keys (spoofed addresses) cannot exhaust memory; a key
    dropped early merely starts counting again.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[float, int]] = {}  # key → (window ends at, hits)

    def hit(self, key: str, limit: str) -> bool:
        """Count one hit; see :class:`Limiter`."""
        allowed, period = parse_limit(limit)
        name = f"{key}/{period}"
        with self._lock:
            now = self._clock()
            ends, hits = self._counters.pop(name, (0.0, 0))
            if now >= ends:  # a new window; windows are aligned so every process agrees
                ends, hits = (now // period + 1) * period, 0
            hits += 1
            self._counters[name] = (ends, hits)  # re-inserted: dict order is age order
            if len(self._counters) > self._max_keys:
                self._prune(now)
            return hits <= allowed

    def _prune(self, now: float) -> None:
        for name in [n for n, (ends, _) in self._counters.items() if ends <= now]:
            del self._counters[name]
        while len(self._counters) > self._max_keys:
            del self._counters[next(iter(self._counters))]


def hit_all(limiter: Limiter, hits: Sequence[tuple[str, str]]) -> list[bool]:
    """Count one hit of each ``(key, limit)``: in one round trip when the limiter has a
    ``hit_many`` (:class:`workers.redis_limiter.RedisLimiter`), else one ``hit`` each."""
    many = getattr(limiter, "hit_many", None)
    if many is not None:
        return list(many(hits))
    return [limiter.hit(key, limit) for key, limit in hits]


def load_limiter(path: str, settings: Settings | None = None) -> Limiter:
    """Instantiate the limiter named ``module:Class`` (``MAILER_LIMITER``) with ``settings``."""
    module_name, _, attribute = path.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return cast(Limiter, factory(settings))
