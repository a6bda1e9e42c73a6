"""Token buckets, per-domain limits and the slow-down/recover rule, on a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.config import Settings
from mailer.throttle import (
    HOLD_SECONDS,
    MemoryRateStore,
    SqliteRateStore,
    Throttle,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def throttle(clock: Clock, store: object | None = None, **settings: float) -> Throttle:
    return Throttle(
        store or MemoryRateStore(clock),  # type: ignore[arg-type]
        Settings(**settings),  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
    )


def sends_in(t: Throttle, clock: Clock, seconds: float, domain: str = "example.com") -> int:
    start, count = clock.now, 0
    while clock.now - start < seconds:
        t.wait_turn("main", None, domain)
        count += 1
    return count


def test_global_rate_holds_over_time() -> None:
    clock = Clock()
    t = throttle(clock, rate_per_second=200)
    assert sends_in(t, clock, 20) == pytest.approx(200 * 20, rel=0.01)


def test_two_processes_sharing_a_store_keep_the_shared_rate(tmp_path: Path) -> None:
    clock = Clock()
    one = throttle(clock, SqliteRateStore(tmp_path / "rates.db", clock), rate_per_second=100)
    two = throttle(clock, SqliteRateStore(tmp_path / "rates.db", clock), rate_per_second=100)
    start, count = clock.now, 0
    while clock.now - start < 10:  # interleaved, as two worker processes would be
        one.wait_turn("main", None, "a.example")
        two.wait_turn("main", None, "b.example")
        count += 2
    assert count == pytest.approx(100 * 10, rel=0.02)


def test_per_domain_limit_applies_to_each_domain_alone() -> None:
    clock = Clock()
    t = throttle(clock, domain_rate_per_second=20)
    assert sends_in(t, clock, 10, "gmail.com") == pytest.approx(200, rel=0.05)
    # Another domain is not held back by the first one's debt.
    assert t.wait_turn("main", None, "yahoo.com") == 0


def test_server_rate_is_its_own_bucket() -> None:
    clock = Clock()
    t = throttle(clock)
    start, count = clock.now, 0
    while clock.now - start < 5:
        t.wait_turn("slow-relay", 10.0, "example.com")
        count += 1
    assert count == pytest.approx(50, rel=0.05)


def test_slow_down_halves_holds_then_recovers_additively() -> None:
    clock = Clock()
    t = throttle(clock)
    assert t.slow_down("relay", 100.0) == 50.0
    assert t.server_rate("relay", 100.0) == 50.0
    clock.now += HOLD_SECONDS  # held at half for a while
    assert t.server_rate("relay", 100.0) == pytest.approx(50.0, abs=0.01)
    clock.now += 2
    assert t.server_rate("relay", 100.0) == pytest.approx(70.0, abs=0.1)  # +10% of 100 per s
    clock.now += 10
    assert t.server_rate("relay", 100.0) == 100.0  # fully recovered: back to configured
    assert t.store.get_state("slow:relay") is None


def test_repeated_slow_downs_compound_and_never_stop_sending() -> None:
    clock = Clock()
    t = throttle(clock)
    rate = 100.0
    for _ in range(5):
        rate = t.slow_down("relay", 100.0)
    assert rate == 50.0  # a burst of 421s within one hold is one signal, not five
    for _ in range(20):
        clock.now += HOLD_SECONDS  # each hold over: another refusal halves again
        rate = t.slow_down("relay", 100.0)
    assert rate == 0.5  # the floor: slow, but still sending


def test_slow_down_of_a_server_without_a_set_rate_uses_the_observed_rate() -> None:
    clock = Clock()
    t = throttle(clock)
    for _ in range(101):
        t.sent("relay")
        clock.now += 0.01  # 100 msg/s observed
    assert t.slow_down("relay", None) == pytest.approx(50, rel=0.05)
    clock.now += HOLD_SECONDS + 100
    assert t.server_rate("relay", None) is None  # recovered: unlimited again


def test_warm_up_ramps_a_new_ip_from_the_start_rate_to_the_limit() -> None:
    clock = Clock()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    settings = {
        "rate_per_second": 100.0,
        "warmup_since": start.isoformat(),
        "warmup_start_rate": 1.0,
        "warmup_days": 10.0,
    }
    day = 86400.0
    clock.now = start.timestamp()
    assert sends_in(throttle(clock, **settings), clock, 10) == pytest.approx(10, abs=2)
    clock.now = start.timestamp() + 5 * day  # halfway: geometric mean of 1 and 100
    assert sends_in(throttle(clock, **settings), clock, 10) == pytest.approx(100, rel=0.1)
    clock.now = start.timestamp() + 11 * day  # warmed up: the configured limit
    assert sends_in(throttle(clock, **settings), clock, 10) == pytest.approx(1000, rel=0.02)
