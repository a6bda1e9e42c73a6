"""Several SMTP servers, slow-downs and the self-pausing edition, over real SMTP connections."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.config import Settings
from mailer.models import Edition, SmtpServer
from mailer.servers import Server, ServerPool, load_servers, record_health
from mailer.subscribers import ReaderRow, import_readers
from mailer.throttle import MemoryRateStore, Throttle
from mailer.transport import MemoryTransport, Outcome, SendResult, SmtpConfig, SmtpTransport
from tests.support.smtp_server import ScriptedSMTPServer
from tests.support.world import World, make_world, migrated_template

__all__ = ["migrated_template"]


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template, alert_batch_size=50, claim_chunk=10)


def smtp(server: ScriptedSMTPServer) -> SmtpTransport:
    return SmtpTransport(SmtpConfig.from_url(f"{server.url}?timeout=2&connect_timeout=1"))


def received(*servers: ScriptedSMTPServer) -> Counter[str]:
    return Counter(r for s in servers for m in s.received for r in m.rcpt_tos)


def test_a_server_going_down_mid_edition_moves_its_mail_to_the_other(world: World) -> None:
    readers = world.add_readers(300)
    with ScriptedSMTPServer() as first, ScriptedSMTPServer() as second:
        pool = ServerPool(
            [Server("first", smtp(first)), Server("second", smtp(second))],
            rng=iter([0.1, 0.5, 0.9, 0.5] * 10_000).__next__,  # first, then second, …
        )
        sender = world.sender(pool)
        started = world.service.trigger_alert(world.add_story())
        batches = world.take_batches()
        sender.send_batch(batches[0][1])
        assert received(first) and received(second)  # both in use
        first.stop()  # the first server goes away mid-edition
        for _, batch in batches[1:]:
            sender.send_batch(batch)
        got = received(first, second)
    assert sorted(got) == sorted(readers) and set(got.values()) == {1}  # none lost or doubled
    assert {d.status for d in world.deliveries(started.edition_id)} == {"sent"}
    assert pool.servers[0].down_until > 0 and pool.servers[1].down_until == 0


def test_health_of_table_servers_is_recorded_for_smtp_status(world: World) -> None:
    with ScriptedSMTPServer() as alive:
        dead_port = alive.port + 1 if alive.port < 65000 else alive.port - 1
        with world.engine.begin() as conn:
            conn.execute(
                SmtpServer.__table__.insert(),
                [
                    {
                        "name": "dead",
                        "url": f"smtp://127.0.0.1:{dead_port}?connect_timeout=1",
                        "weight": 100,
                        "max_connections": 1,
                        "enabled": True,
                        "healthy": True,
                    },
                    {
                        "name": "alive",
                        "url": alive.url,
                        "weight": 1,
                        "max_connections": 1,
                        "enabled": True,
                        "healthy": True,
                    },
                ],
            )
        servers = load_servers(world.engine, world.settings)
        assert [s.name for s in servers] == ["dead", "alive"]
        pool = ServerPool(servers, on_health=record_health(world.engine), rng=lambda: 0.0)
        result = pool.send("bounces@example.com", "amal@example.com", b"Subject: x\r\n\r\nx\r\n")
        assert result.outcome is Outcome.SENT and len(alive.received) == 1
    with world.engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(select(SmtpServer)).all()}
    assert rows["dead"].healthy is False and rows["dead"].down_until is not None
    assert "connection refused" in rows["dead"].last_error
    assert rows["alive"].healthy is True


def test_421_to_one_message_in_three_slows_down_and_everything_arrives(world: World) -> None:
    readers = world.add_readers(90)
    seen = Counter[str]()

    def rule(recipient: str, attempt: int) -> tuple[int, str] | None:
        seen[recipient] += 1
        if attempt == 1 and sum(seen.values()) % 3 == 0:
            return 421, "4.7.0 Too many messages, slow down"
        return None

    sleeps: list[float] = []
    with ScriptedSMTPServer() as server:
        server.set_data_rule(rule)
        throttle = Throttle(MemoryRateStore(), world.settings, sleep=sleeps.append)
        pool = ServerPool([Server("relay", smtp(server))], throttle)
        sender = world.sender(pool)
        started = world.service.trigger_alert(world.add_story())
        world.drain(sender)
        assert throttle.store.get_state("slow:relay") is not None  # it slowed down
        assert any(s > 0 for s in sleeps)  # and really waited between messages
        for _ in range(6):  # deferred readers come back through the sweeper
            world.clock.advance(3600)
            world.sweep()
            world.drain(sender)
        got = received(server)
    assert sorted(got) == sorted(readers) and set(got.values()) == {1}
    assert {d.status for d in world.deliveries(started.edition_id)} == {"sent"}


def test_an_edition_with_too_many_hard_failures_pauses_itself(world: World) -> None:
    world.add_readers(1000)
    bad = {f"reader{i:04d}@example.com" for i in range(1, 1001) if i % 10 == 0}  # 10 %
    hard = SendResult.from_reply(550, "5.1.1 no such user")
    transport = MemoryTransport({address: hard for address in bad})
    sender = world.sender(transport)
    started = world.service.trigger_alert(world.add_story())
    reports = world.drain(sender)

    edition = world.edition(started.edition_id)
    assert edition.status == "paused"
    assert "over the 5% threshold" in edition.status_reason
    tried = len(transport.attempts)
    # It stopped within one batch of crossing the threshold (500 sends by default).
    assert 500 <= tried <= 500 + world.settings.alert_batch_size
    assert any(r.stopped for r in reports)
    counts = Counter(d.status for d in world.deliveries(started.edition_id))
    assert counts["queued"] == 1000 - tried

    world.service.resume(started.edition_id)  # the operator looked, and carries on
    transport.script = {}
    world.drain(sender)
    world.finish(started.edition_id)
    final = Counter(d.status for d in world.deliveries(started.edition_id))
    assert final["queued"] == 0 and final["sent"] + final["bounced"] == 1000
    with world.engine.connect() as conn:
        assert conn.scalar(select(Edition.status).where(Edition.id == started.edition_id)) == (
            "sent"
        )


@pytest.mark.parametrize("offers_smtputf8", [True, False])
def test_non_ascii_local_part_needs_a_server_that_offers_smtputf8(
    world: World, offers_smtputf8: bool
) -> None:
    world.add_readers(3)
    report = import_readers(
        world.engine,
        [ReaderRow(line=1, email="قارئ@example.com", name="قارئ", topics=("breaking",))],
        world.settings,
        consented=True,
    )
    assert not report.errors
    with ScriptedSMTPServer(smtputf8=offers_smtputf8) as server:
        sender = world.sender(smtp(server))
        started = world.service.trigger_alert(world.add_story())
        world.drain(sender)
        got = received(server)
    rows = world.by_email(started.edition_id)
    arabic = rows["قارئ@example.com"]
    if offers_smtputf8:
        assert arabic.status == "sent" and got["قارئ@example.com"] == 1
        assert "SMTPUTF8" in server.received[-1].mail_options or any(
            "SMTPUTF8" in m.mail_options for m in server.received
        )
    else:
        assert arabic.status == "failed" and "SMTPUTF8" in (arabic.last_response or "")
        assert "قارئ@example.com" not in got
    assert sum(1 for e, d in rows.items() if e.isascii() and d.status == "sent") == 3


def test_max_connections_is_shared_by_every_process() -> None:
    """Two sending processes, a relay that allows one connection: the second goes elsewhere
    until the first lets go (or dies and its slot lapses)."""
    now = [1_000.0]
    store = MemoryRateStore(lambda: now[0])
    throttle = Throttle(store, Settings(), clock=lambda: now[0], sleep=lambda s: None)

    def process(name: str) -> tuple[ServerPool, MemoryTransport, MemoryTransport]:
        small, big = MemoryTransport(), MemoryTransport()
        pool = ServerPool(
            [Server("small", small, weight=100, max_connections=1), Server("big", big)],
            throttle,
            clock=lambda: now[0],
            rng=lambda: 0.0,  # always prefer "small"
        )
        pool.owner = name
        return pool, small, big

    first, first_small, _ = process("host-a:1")
    second, second_small, second_big = process("host-b:2")
    first.send("b@example.com", "x@example.com", b"x")
    second.send("b@example.com", "y@example.com", b"y")
    assert len(first_small.sent) == 1
    assert len(second_small.sent) == 0 and len(second_big.sent) == 1  # the slot is taken

    first.close()  # releases its slot
    now[0] += 31  # the second process re-asks for a slot once its cached answer is stale
    second.send("b@example.com", "z@example.com", b"z")
    assert len(second_small.sent) == 1

    third, third_small, third_big = process("host-c:3")
    third.send("b@example.com", "w@example.com", b"w")
    assert len(third_big.sent) == 1  # held by the second process
    now[0] += 61  # the second process died without releasing: its slot lapses
    third.send("b@example.com", "v@example.com", b"v")
    assert len(third_small.sent) == 1
