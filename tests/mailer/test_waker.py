"""The web process's wake-ups for confirmation emails: gathered, never lost to an error."""

from __future__ import annotations

import threading
import time

from mailer.dispatch import MemoryDispatcher
from mailer.web.waker import Waker


class Recording(MemoryDispatcher):
    """Records each call, so a test sees how the ids were grouped."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[int]]] = []
        self.fail_first = fail_first
        self.called = threading.Event()

    def dispatch_messages(self, queue: str, message_ids: list[int]) -> None:
        self.calls.append((queue, list(message_ids)))
        self.called.set()
        if self.fail_first and len(self.calls) == 1:
            raise ConnectionError("broker down")
        super().dispatch_messages(queue, message_ids)


def test_wake_ups_within_the_linger_go_out_as_one_call_per_queue() -> None:
    dispatcher = Recording()
    waker = Waker(lambda: dispatcher, linger=0.2)
    began = time.monotonic()
    for message_id in range(1, 6):
        waker.wake("alerts", message_id)
    waker.wake("digests", 99)
    assert time.monotonic() - began < 0.05  # the request never waits for the broker
    assert dispatcher.called.wait(2)
    time.sleep(0.05)
    assert sorted(dispatcher.calls) == [("alerts", [1, 2, 3, 4, 5]), ("digests", [99])]
    waker.close()


def test_close_dispatches_what_is_waiting() -> None:
    dispatcher = Recording()
    waker = Waker(lambda: dispatcher, linger=30)  # would wait half a minute
    waker.wake("alerts", 7)
    time.sleep(0.05)
    waker.close()
    assert dispatcher.messages == [("alerts", 7)]


def test_a_broker_error_is_logged_and_the_next_wake_ups_still_go() -> None:
    dispatcher = Recording(fail_first=True)
    waker = Waker(lambda: dispatcher, linger=0.01)
    waker.wake("alerts", 1)
    assert dispatcher.called.wait(2)
    time.sleep(0.05)
    waker.wake("alerts", 2)
    waker.close()
    assert dispatcher.messages == [("alerts", 2)]  # 1 waits for the sweeper (its row is queued)


def test_no_linger_dispatches_in_the_callers_thread() -> None:
    dispatcher = Recording()
    Waker(lambda: dispatcher, linger=0).wake("alerts", 3)
    assert dispatcher.messages == [("alerts", 3)]
