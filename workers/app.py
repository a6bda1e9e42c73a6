"""The Celery application: queues, reliability settings, per-process set-up.

Reliability (DESIGN.md §2, §7): late acks with ``task_reject_on_worker_lost`` so a killed
child's task goes back to the queue; prefetch 1; JSON payloads of ids; a visibility timeout
longer than any lease; no broker ETA anywhere near it (retry delays live in the database).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from mailer import db
from mailer.config import Settings, get_settings
from mailer.dispatch import ALERTS_QUEUE, DIGESTS_QUEUE, MAINTENANCE_QUEUE
from workers import fs_transport, runtime

QUEUES = (ALERTS_QUEUE, DIGESTS_QUEUE, MAINTENANCE_QUEUE)


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_embedded:
        fs_transport.install()  # atomic message files: several processes share the folder
        folder = settings.broker_dir
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": settings.broker_poll_interval,
        }
    return {"visibility_timeout": settings.broker_visibility_timeout}


def make_celery(settings: Settings) -> Celery:
    app = Celery("mailer", broker=settings.broker, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue=DIGESTS_QUEUE,
        task_routes={
            name: {"queue": MAINTENANCE_QUEUE}
            for name in (
                "mailer.sweep",
                "mailer.schedule_tick",
                "mailer.poll_feeds",
                "mailer.poll_imap",
                "mailer.forget_unconfirmed",
            )
        },
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # The embedded broker has no fanout worth using: no remote control or events.
        worker_enable_remote_control=not settings.broker_is_embedded,
        beat_schedule={
            "sweep": {
                "task": "mailer.sweep",
                "schedule": settings.sweep_interval_seconds,
                # A sweep that waited longer than a few intervals is stale: drop it.
                "options": {"expires": settings.sweep_interval_seconds * 3},
            },
            # Idempotent: a duplicated or replayed tick creates no second edition.
            "schedule-tick": {
                "task": "mailer.schedule_tick",
                "schedule": settings.schedule_tick_seconds,
                "options": {"expires": settings.schedule_tick_seconds * 2},
            },
            # Hourly: pending readers older than 30 days are forgotten.
            "forget-unconfirmed": {
                "task": "mailer.forget_unconfirmed",
                "schedule": 3600.0,
                "options": {"expires": 1800},
            },
            "poll-imap": {"task": "mailer.poll_imap", "schedule": 60.0, "options": {"expires": 60}},
            "poll-feeds": {
                "task": "mailer.poll_feeds",
                "schedule": 60.0,
                "options": {"expires": 120},
            },
        },
    )
    return app


app = make_celery(get_settings())


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Engines and SMTP connections must never be shared with the parent process."""
    db.reset_engine()
    runtime.reset()


@signals.worker_process_shutdown.connect
def _before_exit(**_: Any) -> None:
    runtime.close()
