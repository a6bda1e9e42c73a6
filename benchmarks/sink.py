"""A minimal SMTP responder that only counts: the benchmarks' receiving end.

aiosmtpd costs about 1 ms of CPU per message and tops out near 1,100 msg/s, so it would measure
itself rather than the sender. This one answers 250 to everything, reads DATA up to
``CRLF.CRLF`` (or BDAT's byte count), and per message notes only the Message-ID, its arrival
time and whether a DKIM-Signature header is present. It advertises 8BITMIME, SMTPUTF8,
PIPELINING and CHUNKING, and like Postfix answers all the commands of one read with one write.

Counts are kept per *key*, the part of the Message-ID before its first dot: the service's
Message-IDs are ``<edition.subscriber.mac@domain>``, so the key is the edition id. A client asks
for them with the extra verb ``XSTAT`` (one JSON line) and clears them with ``XRESET``.

Run as ``python -m benchmarks.sink [--port P] [--ids FILE]``; it prints ``ready PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

END = b"\r\n.\r\n"
EHLO = (
    b"250-bench-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
    b"250 SIZE 104857600\r\n"
)


@dataclass
class KeyStats:
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    signed: int = 0


@dataclass
class Tally:
    keys: dict[str, KeyStats] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)
    duplicates: int = 0
    without_id: int = 0
    ids: IO[bytes] | None = None

    def record(self, message: bytearray, end: int) -> None:
        """Note the message ``message[:end]`` (read in place: the body is never copied)."""
        now = time.time()
        head_end = message.find(b"\r\n\r\n", 0, end)
        head_end = end if head_end < 0 else head_end
        at = message.find(b"Message-ID: <", 0, head_end)
        if at < 0:
            self.without_id += 1
            key, ident = "-", b""
        else:
            at += len(b"Message-ID: ")
            ident = bytes(message[at : message.find(b">", at) + 1])
            key = ident[1 : ident.find(b".")].decode("ascii", "replace") if b"." in ident else "-"
            if ident in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(ident)
            if self.ids is not None:
                self.ids.write(ident + b"\n")
        stats = self.keys.get(key)
        if stats is None:
            stats = self.keys[key] = KeyStats(first=now)
        stats.count += 1
        stats.last = now
        if message.startswith(b"DKIM-Signature:") or (
            message.find(b"\nDKIM-Signature:", 0, head_end) >= 0
        ):
            stats.signed += 1

    def snapshot(self) -> dict[str, object]:
        if self.ids is not None:
            self.ids.flush()
        return {
            "total": sum(s.count for s in self.keys.values()),
            "duplicates": self.duplicates,
            "without_id": self.without_id,
            "keys": {k: [s.count, s.first, s.last, s.signed] for k, s in self.keys.items()},
        }

    def reset(self) -> None:
        self.keys.clear()
        self.seen.clear()
        self.duplicates = self.without_id = 0


class SinkProtocol(asyncio.Protocol):
    """One SMTP session: commands line by line, then the message until CRLF.CRLF, or BDAT
    chunks of a stated size (RFC 3030)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buf = bytearray()
        self.in_data = False
        self.scan = 0  # where to resume looking for CRLF.CRLF
        self.transport: asyncio.Transport | None = None
        self.replies: list[bytes] = []
        self.closing = False
        self.chunk_left = 0  # bytes of the current BDAT chunk still to come
        self.chunk_last = False
        self.chunks = bytearray()  # earlier chunks of a message sent in several

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 bench-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.answer()
        assert self.transport is not None
        if self.replies:
            self.transport.write(b"".join(self.replies))
            self.replies.clear()
        if self.closing:
            self.transport.close()

    def answer(self) -> None:
        buf = self.buf
        while buf and not self.closing:
            if self.chunk_left:
                if len(buf) < self.chunk_left:
                    return
                self.end_chunk()
                continue
            if self.in_data:
                if buf.startswith(b".\r\n") and self.scan == 0:  # an empty message
                    end, size = 0, 3
                else:
                    end = buf.find(END, self.scan)
                    if end < 0:
                        self.scan = max(0, len(buf) - len(END))
                        return
                    size = end + len(END)
                self.tally.record(buf, end)
                del buf[:size]
                self.in_data, self.scan = False, 0
                self.reply(b"250 2.0.0 queued\r\n")
                continue
            newline = buf.find(b"\r\n")
            if newline < 0:
                return
            line = bytes(buf[:newline])
            del buf[: newline + 2]
            self.command(line)

    def end_chunk(self) -> None:
        size, buf = self.chunk_left, self.buf
        self.chunk_left = 0
        if not self.chunk_last:
            self.chunks += buf[:size]
            del buf[:size]
            self.reply(b"250 2.0.0 chunk received\r\n")
            return
        if self.chunks:
            self.chunks += buf[:size]
            del buf[:size]
            self.tally.record(self.chunks, len(self.chunks))
            self.chunks = bytearray()
        else:
            self.tally.record(buf, size)
            del buf[:size]
        self.reply(b"250 2.0.0 queued\r\n")

    def command(self, line: bytes) -> None:
        verb = line[:6].upper()
        if verb.startswith(b"BDAT"):
            words = line.split()
            self.chunk_left = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            self.chunk_last = len(words) > 2 and words[2].upper() == b"LAST"
            if not self.chunk_left:  # "BDAT 0 LAST": no bytes to wait for
                self.end_chunk()
        elif verb.startswith(b"DATA"):
            self.in_data = True
            self.reply(b"354 end with <CRLF>.<CRLF>\r\n")
        elif verb.startswith((b"EHLO", b"HELO")):
            self.reply(EHLO if verb.startswith(b"EHLO") else b"250 bench-sink\r\n")
        elif verb.startswith(b"QUIT"):
            self.reply(b"221 2.0.0 bye\r\n")
            self.closing = True
        elif verb == b"XSTAT":
            self.reply(b"250 " + json.dumps(self.tally.snapshot()).encode() + b"\r\n")
        elif verb == b"XRESET":
            self.tally.reset()
            self.reply(b"250 reset\r\n")
        else:  # MAIL, RCPT, RSET, NOOP…
            self.reply(b"250 2.0.0 OK\r\n")

    def reply(self, data: bytes) -> None:
        self.replies.append(data)


async def serve(port: int, ids: Path | None) -> None:
    tally = Tally(ids=ids.open("ab") if ids else None)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SinkProtocol(tally), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"ready {bound}", flush=True)
    async with server:
        await server.serve_forever()


class SinkClient:
    """Reads and clears the sink's counts over its own SMTP port."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.address = (host, port)

    def _ask(self, verb: bytes) -> str:
        with socket.create_connection(self.address, timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # greeting
            sock.sendall(verb + b"\r\nQUIT\r\n")
            reply = reader.readline().decode()
            reader.readline()
        if not reply.startswith("250 "):
            raise RuntimeError(f"sink answered {reply!r}")
        return reply[4:].strip()

    def stats(self) -> dict[str, object]:
        result: dict[str, object] = json.loads(self._ask(b"XSTAT"))
        return result

    def key(self, key: str | int) -> KeyStats:
        keys = self.stats()["keys"]
        assert isinstance(keys, dict)
        count, first, last, signed = keys.get(str(key), [0, 0.0, 0.0, 0])
        return KeyStats(count, first, last, signed)

    def reset(self) -> None:
        self._ask(b"XRESET")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ids", type=Path, default=None, help="append Message-IDs to this file")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.ids))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
