"""A small HTTP/1.1 load generator for the subscribe form, on raw asyncio streams.

httpx would spend more CPU per request than the server it measures (both share two cores), so
each simulated browser is a keep-alive connection that speaks just enough HTTP: it GETs the
form once for its CSRF cookie and hidden field, then POSTs sign-ups back to back, timing each.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

CSRF_FIELD = re.compile(rb'name="csrf_token"\s+value="([^"]+)"|value="([^"]+)"\s+name="csrf_token"')
COOKIE = re.compile(rb"(?im)^set-cookie:\s*(mailer_csrf=[^;\r\n]+)")


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)  # seconds, counted requests only
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class HttpError(RuntimeError):
    pass


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length:
        body = await reader.readexactly(int(length.group(1)))
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")
        body = b"".join(p[:-2] for p in parts)
    else:
        body = b""
    return status, head, body


async def probe(port: int, path: str) -> int:
    """The status of one GET (404 means the route is not there)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    status, _, _ = await _response(reader)
    writer.close()
    return status


async def _browser(
    index: int, port: int, load: Load, warm_until: float, stop_at: float, failures: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /subscribe HTTP/1.1\r\nHost: bench\r\n\r\n")
    status, head, body = await _response(reader)
    cookie, token = COOKIE.search(head), CSRF_FIELD.search(body)
    if status != 200 or cookie is None or token is None:
        raise HttpError(f"GET /subscribe: {status}, cookie {bool(cookie)}, field {bool(token)}")
    csrf = (token.group(1) or token.group(2)).decode()
    n = 0
    while (started := time.monotonic()) < stop_at:
        n += 1
        form = urlencode(
            {
                "email": f"signup{index}x{n}@s{n % 100}.example.org",
                "name": "قارئ",
                "topics": "breaking",
                "cadence": "instant",
                "csrf_token": csrf,
            }
        ).encode()
        writer.write(
            b"POST /subscribe HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Cookie: " + cookie.group(1) + b"\r\n"
            b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form
        )
        status, _, _ = await _response(reader)
        if started >= warm_until:
            load.latencies.append(time.monotonic() - started)
            load.statuses[status] = load.statuses.get(status, 0) + 1
        if status != 200 and len(failures) < 3:
            failures.append(f"POST /subscribe answered {status}")
    writer.close()


async def run_load(port: int, connections: int, seconds: float, warmup: float = 0.5) -> Load:
    load = Load()
    failures: list[str] = []
    begin = time.monotonic()
    warm_until, stop_at = begin + warmup, begin + warmup + seconds
    await asyncio.gather(
        *(_browser(i, port, load, warm_until, stop_at, failures) for i in range(connections))
    )
    load.seconds = max(time.monotonic(), stop_at) - warm_until
    if failures:
        raise HttpError("; ".join(failures))
    return load
