"""The sink ceiling's client: one persistent smtplib connection sending a ready message.

Kept apart from the scenario (which imports the whole service) so that each spawned client
process imports nothing but smtplib.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable

SLOT = b"NNNNNNNN"  # where each message's own number goes in its Message-ID
ENVELOPE_FROM = "bounces@example.com"


def blaster(index: int, args: tuple[int, bytes, int]) -> Callable[[], int]:
    """Connect now; the returned ``run`` sends ``count`` messages and says how many."""
    port, message, count = args
    head, tail = message.split(SLOT)
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo()

    def run() -> int:
        for i in range(count):
            data = head + f"{index}x{i}".encode() + tail
            smtp.sendmail(ENVELOPE_FROM, ["reader@example.net"], data, ["BODY=8BITMIME"])
        smtp.quit()
        return count

    return run
