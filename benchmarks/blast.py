"""The sink ceiling's clients: one persistent smtplib connection sending a ready message.

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


def pipelined_blaster(index: int, args: tuple[int, bytes, int]) -> Callable[[], int]:
    """As :func:`blaster`, with MAIL, RCPT and DATA pipelined (RFC 2920) in one write: the
    ceiling of a sender that pipelines, two round trips per message instead of four."""
    port, message, count = args
    head, tail = message.split(SLOT)
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.ehlo()
    assert smtp.has_extn("pipelining")
    envelope = (
        f"MAIL FROM:<{ENVELOPE_FROM}> BODY=8BITMIME\r\nRCPT TO:<reader@example.net>\r\nDATA\r\n"
    )

    def run() -> int:
        for i in range(count):
            data = head + f"{index}x{i}".encode() + tail
            smtp.send(envelope)
            replies = [smtp.getreply()[0] for _ in range(3)]
            if replies != [250, 250, 354]:
                raise RuntimeError(f"sink answered {replies}")
            smtp.send(data.replace(b"\n.", b"\n..") + b".\r\n")
            if smtp.getreply()[0] != 250:
                raise RuntimeError("sink refused a message")
        smtp.quit()
        return count

    return run
