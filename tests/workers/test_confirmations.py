"""Confirmation emails woken in batches (the web's Waker) reach every reader, through real
Celery workers on both stacks, with no sweeper to make up for a lost wake-up."""

from __future__ import annotations

import redis

from mailer import signup
from mailer.web.waker import Waker
from tests.support.stack import REDIS_URL, Stack
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher


def queued_tasks(stack: Stack, queue: str) -> int:
    if stack.kind == "postgres":
        return int(redis.Redis.from_url(REDIS_URL).llen(queue))
    return len(list(stack.settings.broker_dir.rglob(f"*.{queue}.msg")))


def test_sign_ups_woken_together_are_one_task_and_each_gets_a_confirmation(stack: Stack) -> None:
    addresses = [f"new{i}@example.org" for i in range(6)]
    message_ids = []
    for address in addresses:
        done = signup.subscribe(
            stack.engine,
            stack.settings,
            signup.SubscribeRequest(
                email=address,
                name="",
                topics=("breaking",),
                cadence="instant",
                consent=signup.Consent("192.0.2.1", "test", "web"),
            ),
        )
        assert done.message_id is not None
        message_ids.append(done.message_id)

    dispatcher = CeleryDispatcher(make_celery(stack.settings))
    waker = Waker(lambda: dispatcher, linger=0.1)
    for message_id in message_ids:
        waker.wake("alerts", message_id)
    waker.close()
    assert queued_tasks(stack, "alerts") == 1

    stack.start_worker(beat=False)  # no sweeper: only the wake-up can send them
    stack.wait_until(lambda: len(stack.smtp.received) >= 6, 60, "six confirmations")
    received = sorted(r for message in stack.smtp.received for r in message.rcpt_tos)
    assert received == sorted(addresses)
