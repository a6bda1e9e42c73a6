"""kombu's filesystem transport, made safe for several processes (the embedded broker).

kombu creates a message file and then writes into it, so a consumer listing the folder in
between reads an empty file, and a publisher killed mid-write leaves a truncated one; either
made the consumer fail on every poll ("Expecting value"). Here a message is written to a hidden
temporary name and renamed into place, which is atomic, and an unreadable file is skipped
rather than fatal (the database sweeper re-dispatches whatever it carried).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        folder = self.data_folder_out
        final = os.path.join(folder, f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg")
        # A leading dot and no ".<queue>.msg" suffix: no consumer ever picks up a partial file.
        temporary = os.path.join(folder, f".partial-{uuid.uuid4().hex}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(message)))
            os.replace(temporary, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ChannelError(f"cannot add a message to {folder!r}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("skipped an unreadable broker message for %s: %s", queue, exc)
            raise Empty() from exc


class Transport(filesystem.Transport):
    Channel = Channel


def install() -> None:
    """Make ``filesystem://`` URLs use this transport in this process."""
    TRANSPORT_ALIASES["filesystem"] = "workers.fs_transport:Transport"
