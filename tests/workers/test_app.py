"""The Celery configuration keeps the reliability promises of DESIGN.md §2 and §7."""

from __future__ import annotations

import json

from kombu.entity import Queue

from mailer.config import Settings
from mailer.dispatch import Batch
from workers import tasks
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher


def test_killed_children_requeue_and_prefetch_is_one() -> None:
    conf = make_celery(Settings(broker_url="redis://127.0.0.1:6379/15")).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert {q.name for q in conf.task_queues} == {"alerts", "digests", "maintenance"}


def test_no_countdown_or_lease_outlives_the_visibility_timeout() -> None:
    """With Redis, an ETA past the visibility timeout is redelivered: a duplicate wake-up."""
    settings = Settings(broker_url="redis://127.0.0.1:6379/15")
    visibility = make_celery(settings).conf.broker_transport_options["visibility_timeout"]
    assert visibility == settings.broker_visibility_timeout
    assert settings.lease_seconds < visibility
    assert tasks.send_batch.retry_backoff_max < visibility
    assert tasks.sweep.default_retry_delay < visibility
    sweep = make_celery(settings).conf.beat_schedule["sweep"]
    assert sweep["options"]["expires"] < visibility
    # Retry delays of deliveries live in the database, never in the broker.
    assert settings.retry_max_seconds < visibility


def test_dispatched_payloads_are_plain_json_ids() -> None:
    sent: list[dict[str, object]] = []

    class Recorder:
        def send_task(self, name: str, **options: object) -> None:
            sent.append({"name": name, **options})

        def producer_or_acquire(self) -> object:
            class _Ctx:
                def __enter__(self) -> None:
                    return None

                def __exit__(self, *exc: object) -> None:
                    return None

            return _Ctx()

    CeleryDispatcher(Recorder()).dispatch("alerts", [Batch(7, 1, 100), Batch(7, 101, 180)])  # type: ignore[arg-type]
    assert [json.loads(json.dumps(m["args"])) for m in sent] == [[7, 1, 100], [7, 101, 180]]
    assert all(m["queue"] == "alerts" for m in sent)
    declared = sent[0]["declare"]
    assert isinstance(declared, list) and isinstance(declared[0], Queue)
