"""Wake-ups for confirmation and welcome emails, gathered into few broker messages.

Publishing one Celery task costs about 0.9 ms of the web process's CPU, as much as the rest of a
sign-up together (``python -m benchmarks --only subscribe``: 329 req/s with a task per request,
449 without). So the web process does not publish in the request: it hands the committed
message's id to a thread of its own, which waits ``linger`` seconds for more and then wakes the
workers once per queue for all of them (one task carrying the ids).

Nothing depends on the wake-up arriving: the message row was committed first, and the sweeper
dispatches rows still queued after a while. A wake-up lost with the process or refused by the
broker only waits for it. ``linger`` 0 dispatches at once, in the caller's thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from collections.abc import Callable

from mailer.dispatch import Dispatcher

log = logging.getLogger(__name__)

_STOP = ("", -1)  # the sentinel close() queues


class Waker:
    """Hands message ids to ``dispatcher()`` (called once, on first use) in batches."""

    def __init__(self, dispatcher: Callable[[], Dispatcher], linger: float) -> None:
        self._load = dispatcher
        self._dispatcher: Dispatcher | None = None
        self._linger = linger
        self._lock = threading.Lock()
        self._pending: queue.SimpleQueue[tuple[str, int]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # cuts the linger short
        self._pid = 0

    def wake(self, queue_name: str, message_id: int) -> None:
        """Have a worker on ``queue_name`` send the committed message ``message_id``."""
        if self._linger <= 0:
            self._dispatch([(queue_name, message_id)])
            return
        self._running().put((queue_name, message_id))

    def close(self, timeout: float = 5.0) -> None:
        """Dispatch what is waiting and stop the thread (at exit, and in tests)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and self._pid == os.getpid():
            self._closing.set()
            self._pending.put(_STOP)
            thread.join(timeout)
            self._closing.clear()

    def _running(self) -> queue.SimpleQueue[tuple[str, int]]:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # none yet, or a forked copy
                self._pid, self._pending = os.getpid(), queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, name="waker", daemon=True)
                self._thread.start()
                atexit.register(self.close)
            return self._pending

    def _run(self) -> None:
        pending = self._pending
        while True:
            first = pending.get()
            if first != _STOP:
                self._closing.wait(self._linger)  # the next sign-ups' ids join this wake-up
            batch = [first]
            while not pending.empty():
                batch.append(pending.get_nowait())
            self._dispatch([item for item in batch if item != _STOP])
            if _STOP in batch:
                return

    def _dispatch(self, items: list[tuple[str, int]]) -> None:
        by_queue: dict[str, list[int]] = {}
        for queue_name, message_id in items:
            by_queue.setdefault(queue_name, []).append(message_id)
        for queue_name, ids in by_queue.items():
            try:
                if self._dispatcher is None:  # loaded late: the web may start before the broker
                    self._dispatcher = self._load()
                self._dispatcher.dispatch_messages(queue_name, ids)
            except Exception:  # the rows are committed: the sweeper dispatches them
                log.exception("could not dispatch messages %s; the sweeper will", ids)
