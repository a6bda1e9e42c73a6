"""Rate limits: in-process fixed windows, and the same counters shared through Redis."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from mailer.config import Settings
from mailer.ratelimit import MemoryLimiter, hit_all, load_limiter, parse_limit
from tests.support.stack import REDIS_URL, need_service
from workers.redis_limiter import RedisLimiter


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_limits_are_parsed_or_refused() -> None:
    assert parse_limit("20/hour") == (20, 3600)
    assert parse_limit("5/minute") == (5, 60)
    assert parse_limit("5 per minute") == (5, 60)
    assert parse_limit("100/second") == (100, 1)
    assert parse_limit("10/5minutes") == (10, 300)
    assert parse_limit("1000/day") == (1000, 86400)
    for bad in ("", "20", "twenty/hour", "20/fortnight", "20/0hour"):
        with pytest.raises(ValueError):
            parse_limit(bad)


def test_a_key_is_allowed_its_limit_per_window_then_again_in_the_next() -> None:
    clock = Clock(3600 * 100)  # the start of an hour
    limiter = MemoryLimiter(clock=clock)
    assert [limiter.hit("ip:1", "3/hour") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("ip:2", "3/hour")  # other keys have their own count
    clock.now += 3599
    assert not limiter.hit("ip:1", "3/hour")
    clock.now += 1  # the next hour
    assert limiter.hit("ip:1", "3/hour")


def test_counting_is_exact_under_threads() -> None:
    limiter = MemoryLimiter()
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ok = limiter.hit("shared", "250/hour")
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 250 and len(allowed) == 800


def test_many_distinct_keys_do_not_grow_memory_without_bound() -> None:
    limiter = MemoryLimiter(max_keys=100)
    for i in range(1000):
        limiter.hit(f"address:{i}", "5/hour")
    assert len(limiter._counters) <= 100


def test_the_limiter_is_chosen_by_import_path() -> None:
    settings = Settings()
    assert isinstance(load_limiter(settings.limiter, settings), MemoryLimiter)
    with pytest.raises(ModuleNotFoundError):
        load_limiter("mailer.nowhere:Limiter", settings)


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
    return REDIS_URL


def test_redis_counters_are_shared_by_every_web_process(redis_url: str) -> None:
    settings = Settings(redis_url=redis_url)
    prefix = f"test:{uuid.uuid4().hex}:"
    one, two = RedisLimiter(settings, prefix=prefix), RedisLimiter(settings, prefix=prefix)
    hits = [limiter.hit("ip:9", "3/minute") for limiter in (one, two, one, two)]
    assert hits == [True, True, True, False]
    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys(f"{prefix}*")
    assert 0 < int(client.ttl(key)) <= 61  # the window's counter expires by itself
    client.delete(key)


def test_several_limits_count_in_one_round_trip_each_on_its_own(redis_url: str) -> None:
    """The sign-up form counts the client and the address together (one pipeline)."""
    prefix = f"test:{uuid.uuid4().hex}:"
    limiter = RedisLimiter(Settings(redis_url=redis_url), prefix=prefix)
    pairs = [("ip:1", "3/minute"), ("address:a", "1/minute")]
    assert [hit_all(limiter, pairs) for _ in range(4)] == [
        [True, True],
        [True, False],
        [True, False],
        [False, False],
    ]
    assert hit_all(MemoryLimiter(), pairs) == [True, True]  # no hit_many: one hit() each
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys(f"{prefix}*"))


def test_redis_is_taken_from_the_broker_url_and_required() -> None:
    with pytest.raises(ValueError):
        RedisLimiter(Settings(redis_url="", broker_url=""))
    limiter = RedisLimiter(Settings(broker_url="redis://127.0.0.1:1/0"))  # nothing listens
    # Redis unreachable: counting falls back to this process rather than refusing readers.
    assert [limiter.hit("ip:1", "2/hour") for _ in range(3)] == [True, True, False]
