"""The Redis token bucket and connection slots, against a real Redis."""

from __future__ import annotations

import itertools
import uuid

import pytest
import redis

from mailer.config import Settings
from tests.support.stack import REDIS_URL, need_service
from workers.redis_rates import RedisRateStore


def store() -> RedisRateStore:
    need_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
    return RedisRateStore(Settings(broker_url=REDIS_URL))


def test_reservations_beyond_the_burst_must_wait_in_turn() -> None:
    rates, key = store(), f"test-{uuid.uuid4().hex}"
    waits = [rates.reserve(key, rate=100.0, burst=10.0) for _ in range(30)]
    assert waits[:9] == [0.0] * 9  # the burst
    later = waits[10:]
    assert all(b > a for a, b in itertools.pairwise(later))  # queued 10 ms apart
    assert later[-1] == pytest.approx(0.2, abs=0.05)


def test_slots_are_limited_released_and_shared_by_owners() -> None:
    rates, key = store(), f"conn-{uuid.uuid4().hex}"
    assert rates.hold_slot(key, "a", 2, 60) and rates.hold_slot(key, "b", 2, 60)
    assert not rates.hold_slot(key, "c", 2, 60)
    assert rates.hold_slot(key, "a", 2, 60)  # renewing one's own slot always works
    rates.release_slot(key, "b")
    assert rates.hold_slot(key, "c", 2, 60)
    assert not rates.hold_slot(key, "e", 2, 60)


def test_slow_down_state_round_trips() -> None:
    rates, key = store(), f"slow-{uuid.uuid4().hex}"
    assert rates.get_state(key) is None
    rates.set_state(key, {"cap": 50.0, "since": 1.0, "ceiling": 100.0})
    assert rates.get_state(key) == {"cap": 50.0, "since": 1.0, "ceiling": 100.0}
    rates.set_state(key, None)
    assert rates.get_state(key) is None
