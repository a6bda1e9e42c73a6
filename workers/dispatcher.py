"""The Celery implementation of :class:`mailer.dispatch.Dispatcher`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kombu.entity import Queue

from mailer.dispatch import Batch

_IDS_PER_TASK = 100

if TYPE_CHECKING:
    from celery import Celery


class CeleryDispatcher:
    def __init__(self, app: Celery | None = None) -> None:
        self._app = app

    def dispatch(self, queue: str, batches: list[Batch]) -> None:
        if self._app is None:
            from workers.app import app  # imported late: the app reads settings at import

            self._app = app
        app = self._app
        if not batches:
            return
        # Declaring the queue on publish restores kombu's routing table if Redis was flushed
        # (otherwise publishing fails with "Cannot route message" until a worker restarts).
        declare = [Queue(queue, routing_key=queue)]
        with app.producer_or_acquire() as producer:
            for batch in batches:  # one task per keyset range, never one per reader
                app.send_task(
                    "mailer.send_batch",
                    args=[batch.edition_id, batch.first_id, batch.last_id],
                    queue=queue,
                    routing_key=queue,
                    declare=declare,
                    producer=producer,
                )

    def dispatch_messages(self, queue: str, message_ids: list[int]) -> None:
        if self._app is None:
            from workers.app import app

            self._app = app
        app = self._app
        if not message_ids:
            return
        declare = [Queue(queue, routing_key=queue)]
        with app.producer_or_acquire() as producer:
            # One task for many ids (the web gathers sign-ups): publishing is the cost, ~1 ms.
            for start in range(0, len(message_ids), _IDS_PER_TASK):
                ids = message_ids[start : start + _IDS_PER_TASK]
                app.send_task(
                    "mailer.send_transactional" if len(ids) == 1 else "mailer.send_transactionals",
                    args=[ids[0]] if len(ids) == 1 else [ids],
                    queue=queue,
                    routing_key=queue,
                    declare=declare,
                    producer=producer,
                )
