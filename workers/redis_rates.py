"""Token buckets in Redis, shared by every worker on every host (a mailer.throttle.RateStore)."""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from mailer.config import Settings

# Atomic reserve: refill by elapsed time (server clock, so hosts need not agree), take one.
RESERVE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - stamp) * rate) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(t))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(tokens)
"""


# Slots as a sorted set of owners scored by expiry: drop lapsed owners, then keep or take one.
HOLD = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
local limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], t + ttl, ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 60)
  return 1
end
return 0
"""


class RedisRateStore:
    def __init__(self, settings: Settings) -> None:
        url = settings.redis_url or settings.broker
        self._redis = redis.Redis.from_url(url)
        self._reserve = self._redis.register_script(RESERVE)
        self._hold = self._redis.register_script(HOLD)

    def reserve(self, key: str, rate: float, burst: float) -> float:
        left = float(cast(Any, self._reserve(keys=[f"mailer:rate:{key}"], args=[rate, burst])))
        return 0.0 if left >= 0 else -left / rate

    def get_state(self, key: str) -> dict[str, float] | None:
        raw = self._redis.get(f"mailer:state:{key}")
        return cast(dict[str, float], json.loads(cast(bytes, raw))) if raw else None

    def set_state(self, key: str, state: dict[str, float] | None) -> None:
        if state is None:
            self._redis.delete(f"mailer:state:{key}")
        else:
            self._redis.set(f"mailer:state:{key}", json.dumps(state), ex=3600)

    def hold_slot(self, key: str, owner: str, limit: int, ttl: float) -> bool:
        held = self._hold(keys=[f"mailer:slots:{key}"], args=[owner, limit, ttl])
        return bool(int(cast(Any, held)))

    def release_slot(self, key: str, owner: str) -> None:
        self._redis.zrem(f"mailer:slots:{key}", owner)
