"""The queue seam: ``mailer`` asks for work to be done; ``workers`` implements the asking.

Payloads are ids only (JSON-safe); the database stays the record, the broker carries wake-ups.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol, cast

ALERTS_QUEUE = "alerts"
DIGESTS_QUEUE = "digests"
MAINTENANCE_QUEUE = "maintenance"


@dataclass(frozen=True)
class Batch:
    """A keyset range of delivery ids of one edition."""

    edition_id: int
    first_id: int
    last_id: int


class Dispatcher(Protocol):
    def dispatch(self, queue: str, batches: list[Batch]) -> None:
        """Wake workers on ``queue`` for each batch (after the planning transaction committed)."""

    def dispatch_messages(self, queue: str, message_ids: list[int]) -> None:
        """Wake workers on ``queue`` for transactional messages (confirmation, welcome)."""


@dataclass
class MemoryDispatcher:
    """Records what would have been queued (unit tests, and dry runs)."""

    sent: list[tuple[str, Batch]] = field(default_factory=list)
    messages: list[tuple[str, int]] = field(default_factory=list)

    def dispatch(self, queue: str, batches: list[Batch]) -> None:
        self.sent.extend((queue, batch) for batch in batches)

    def dispatch_messages(self, queue: str, message_ids: list[int]) -> None:
        self.messages.extend((queue, message_id) for message_id in message_ids)


class NullDispatcher:
    """Queues nothing: the sweeper will find the work in the database."""

    def dispatch(self, queue: str, batches: list[Batch]) -> None:
        return None

    def dispatch_messages(self, queue: str, message_ids: list[int]) -> None:
        return None


def load_dispatcher(path: str) -> Dispatcher:
    """Instantiate the dispatcher named ``module:Class`` (``MAILER_DISPATCHER``)."""
    module_name, _, attribute = path.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return cast(Dispatcher, factory())
