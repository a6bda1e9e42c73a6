"""``GET /metrics``: Prometheus text that parses, with the numbers the database holds — also
for editions whose deliveries were pruned (their rolled-up counts)."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from mailer.models import Edition, utcnow
from mailer.operations import prune_deliveries
from mailer.sweeper import sweep
from mailer.transport import MemoryTransport, SendResult
from tests.api.conftest import World
from tests.api.test_editions import start_alert

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(world: World) -> Samples:
    answer = world.client.get("/metrics")  # no token: scraped from inside the network
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_report_messages_queues_rate_and_reply_codes(backend_world: World) -> None:
    world = backend_world
    readers = world.add_readers(6)
    world.add_readers(3, topics=("syria",), cadence="daily", start=100)
    world.add_story(topic="syria")

    digest = world.call("POST", "/digests", "operator", json={"topic": "syria", "cadence": "daily"})
    assert digest.status_code == 201, digest.text
    world.drain()
    sweep(world.engine, world.settings, world.dispatcher)  # the digest is sent and rolled up
    with world.engine.begin() as conn:
        conn.execute(
            update(Edition)
            .where(Edition.id == digest.json()["edition_id"])
            .values(finished_at=utcnow() - timedelta(days=100))
        )
    assert prune_deliveries(world.engine, timedelta(days=90)) == 3

    script = {
        readers[0]: SendResult.from_reply(451, "4.3.0 try later"),
        readers[1]: SendResult.from_reply(554, "5.7.1 rejected"),
    }
    start_alert(world)
    world.drain(MemoryTransport(script))
    start_alert(world)  # queued, no worker yet
    world.dispatcher.sent.clear()

    samples = scrape(world)
    expected = {
        ("mailer_deliveries", "sent", "alert"): 4,
        ("mailer_deliveries", "deferred", "alert"): 1,
        ("mailer_deliveries", "failed", "alert"): 1,
        ("mailer_deliveries", "queued", "alert"): 6,
        ("mailer_deliveries", "sent", "digest"): 3,  # pruned: from the rolled-up counts
    }
    for (name, status, kind), number in expected.items():
        assert value(samples, name, status=status, kind=kind) == number, (status, kind)
    assert value(samples, "mailer_deliveries", status="failed", kind="digest") == 0
    assert value(samples, "mailer_queued_deliveries", queue="alerts") == 6
    assert value(samples, "mailer_queued_deliveries", queue="digests") == 0
    assert value(samples, "mailer_deferred_backlog", queue="alerts") == 1
    assert value(samples, "mailer_sent_last_minute") == 4
    assert value(samples, "mailer_smtp_replies", code="250") == 4
    assert value(samples, "mailer_smtp_replies", code="451") == 1
    assert value(samples, "mailer_smtp_replies", code="554") == 1
    assert value(samples, "mailer_editions", kind="alert", status="sending") == 2
    assert value(samples, "mailer_editions", kind="digest", status="sent") == 1


def test_metrics_of_an_empty_database(world: World) -> None:
    samples = scrape(world)
    assert value(samples, "mailer_queued_deliveries", queue="alerts") == 0
    assert value(samples, "mailer_sent_last_minute") == 0
    assert not [key for key in samples if key[0] == "mailer_deliveries"]
