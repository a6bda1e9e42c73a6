"""The Redis implementation of :class:`mailer.ratelimit.Limiter`, shared by every web process.

Set ``MAILER_LIMITER=workers.redis_limiter:RedisLimiter``. Counters live at
``MAILER_REDIS_URL`` (or the broker, when that is Redis): one key per (key, window), bumped
with ``INCR`` and given an expiry in the same pipeline, so a window's counter disappears by
itself. Windows are aligned on the epoch, so all processes agree on them.

If Redis cannot be reached the limiter falls back to per-process counters and logs it: a
Redis outage must not stop readers from subscribing, and abuse stays bounded per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis

from mailer.config import Settings, get_settings
from mailer.ratelimit import MemoryLimiter, parse_limit

log = logging.getLogger(__name__)


def redis_url(settings: Settings) -> str:
    """``MAILER_REDIS_URL``, else the broker when it is Redis; ValueError when neither is."""
    if settings.redis_url:
        return settings.redis_url
    if settings.broker.startswith(("redis://", "rediss://")):
        return settings.broker
    raise ValueError("RedisLimiter needs MAILER_REDIS_URL or a redis:// MAILER_BROKER_URL")


class RedisLimiter:
    """Fixed-window counters in Redis (``INCR`` + ``EXPIRE`` in one pipeline)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: redis.Redis | None = None,
        prefix: str = "mailer:ratelimit:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings = settings or get_settings()
        self._redis = client or redis.Redis.from_url(
            redis_url(settings), socket_timeout=2, socket_connect_timeout=2
        )
        self._prefix = prefix
        self._clock = clock
        self._fallback = MemoryLimiter(clock=clock)

    def hit(self, key: str, limit: str) -> bool:
        """Count one hit; False when ``key`` is over ``limit`` in the current window."""
        return self.hit_many([(key, limit)])[0]

    def hit_many(self, hits: Sequence[tuple[str, str]]) -> list[bool]:
        """:meth:`hit` for each ``(key, limit)``, all in one pipeline (one round trip)."""
        now = self._clock()
        allowed = []
        try:
            pipe = self._redis.pipeline(transaction=True)
            for key, limit in hits:
                count, period = parse_limit(limit)
                name = f"{self._prefix}{key}:{period}:{int(now // period)}"
                pipe.incr(name)
                pipe.expire(name, period + 1)  # +1: never expire before the window has ended
                allowed.append(count)
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limits fall back to this process: Redis failed: %s", exc)
            return [self._fallback.hit(key, limit) for key, limit in hits]
        return [int(n) <= count for n, count in zip(replies[::2], allowed, strict=True)]
