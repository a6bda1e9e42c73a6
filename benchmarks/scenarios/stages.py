"""Scenario 4: what each stage costs, measured in this process on the real code paths.

Per edition: Jinja render, premailer, the MIME template build. Per reader: personalisation as
sent (``EditionSender.message_for``: tokens, Message-ID, byte join), DKIM signing, the naive
``EmailMessage`` build for comparison, and the delivery bookkeeping (claim + record on
PostgreSQL) of ``EditionSender.send_batch`` over a planned edition with an in-memory transport,
timed as the time a pooled database connection is held.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import dkim
from sqlalchemy import event

from benchmarks.content import digest_template, reader_values, story_views
from benchmarks.env import BenchEnv
from benchmarks.report import Row
from benchmarks.scenarios.digest import prepare, write_key
from mailer.dispatch import MemoryDispatcher
from mailer.dkim import BodyHasher, DkimSigner
from mailer.rendering import Renderer
from mailer.sending import Claimed, EditionSender
from mailer.tokens import Tokens
from mailer.transport import MemoryTransport

SLUG = "bench-stages"
SECTION = "stages"


class TimedRenderer(Renderer):
    """The renderer, with the premailer step timed apart from the Jinja one."""

    inline_seconds = 0.0

    def _inline(self, html: str) -> str:
        start = time.perf_counter()
        try:
            return super()._inline(html)
        finally:
            self.inline_seconds += time.perf_counter() - start


def per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of one call, over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_item(fn: Callable[[int], Any], count: int) -> float:
    """Mean seconds per call, over ``count`` calls in a tight loop."""
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - start) / count


def stage(name: str, seconds: float, unit: str, target: str = "", ok: bool | None = None) -> Row:
    scale = {"ms": 1e3, "µs": 1e6}[unit]
    return Row(
        f"stage: {name}",
        section=SECTION,
        figure=f"{seconds * scale:,.{2 if unit == 'ms' else 0}f} {unit}",
        target=target,
        ok=ok,
        values={"seconds": seconds},
    )


def rendering(env: BenchEnv, repeat: int) -> tuple[list[Row], tuple[bytes, bytes | None]]:
    renderer = TimedRenderer(env.settings)
    stories = story_views()

    def render() -> Any:
        return renderer.render_digest(
            stories, topic_name="سوريا", cadence="daily", issued_at=datetime.now(UTC)
        )

    render()  # templates compiled, caches warm
    renderer.inline_seconds = 0.0
    start = time.perf_counter()
    for _ in range(repeat):
        rendered = render()
    total = (time.perf_counter() - start) / repeat
    premailer = renderer.inline_seconds / repeat
    template = digest_template(env.settings, rendered)
    build = per_call(lambda: digest_template(env.settings, rendered), repeat)
    tokens, date = Tokens(env.settings), format_datetime(datetime.now(UTC))
    encoded = template.encode(reader_values(env.settings, tokens, 1, 1, date))
    message = template.join(encoded)

    def mime(i: int) -> bytes:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = env.settings.sender, f"r{i}@example.net", "x"
        msg["Message-ID"] = f"<{i}@example.com>"
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        return msg.as_bytes()

    rows = [
        stage("Jinja render (per edition)", total - premailer, "ms"),
        stage("premailer inline (per edition)", premailer, "ms"),
        stage("MIME template build (per edition)", build, "ms"),
        stage("EmailMessage build + as_bytes (naive, per message)", per_item(mime, 50), "µs"),
    ]
    return rows, (message, BodyHasher(*template.body()).body_hash(encoded))


def signing(env: BenchEnv, message: bytes, body_hash: bytes | None, count: int) -> list[Row]:
    pem = write_key(env.tmp).read_bytes()
    signer = DkimSigner(domain="example.com", selector="bench", private_key_pem=pem)
    ours = per_item(lambda _: signer.sign(message), count)
    if body_hash is None:
        raise RuntimeError("the digest's 8bit template declined the precomputed body hash")
    hasher_path = per_item(lambda _: signer.sign(message, body_hash=body_hash), count)
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe"]
    pure = per_item(
        lambda _: dkim.sign(message, b"bench", b"example.com", pem, include_headers=headers),
        max(5, count // 50),
    )
    return [
        stage("DKIM sign, mailer.dkim, whole message read (per message)", ours, "µs"),
        stage("DKIM sign, body hash from the edition's template (per message)", hasher_path, "µs"),
        stage("DKIM sign, dkimpy pure Python (per message)", pure, "µs"),
    ]


def bookkeeping(env: BenchEnv, readers: int) -> list[Row]:
    prepare(env, SLUG, readers)
    dispatcher = MemoryDispatcher()
    started = env.service(dispatcher).send_digest(SLUG, "daily")
    sender = EditionSender(env.settings, env.engine, MemoryTransport())
    prepared = sender.prepare(started.edition_id)
    assert prepared is not None
    reader = Claimed(1, 1, "reader1@d1.example.net", "قارئ", False, 1, datetime.now(UTC))
    personalise = per_item(lambda _: sender.message_for(prepared, reader), 2000)

    held = [0.0]
    checked_out: dict[int, float] = {}

    def checkout(dbapi: Any, *_: Any) -> None:
        checked_out[id(dbapi)] = time.perf_counter()

    def checkin(dbapi: Any, *_: Any) -> None:
        if id(dbapi) in checked_out:
            held[0] += time.perf_counter() - checked_out.pop(id(dbapi))

    event.listen(env.engine.pool, "checkout", checkout)
    event.listen(env.engine.pool, "checkin", checkin)
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _, batch in dispatcher.sent:
            sender.send_batch(batch)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        event.remove(env.engine.pool, "checkout", checkout)
        event.remove(env.engine.pool, "checkin", checkin)
    sent = len(sender.transport.sent)  # type: ignore[attr-defined]
    if sent != started.planned:
        raise RuntimeError(f"bookkeeping run sent {sent} of {started.planned}")
    return [
        stage("personalise one reader, as sent (per message)", personalise, "µs"),
        stage(
            "bookkeeping: claim + record, DB connection held (per message)", held[0] / sent, "µs"
        ),
        stage(
            "per-reader path before SMTP, CPU of this process (per message)",
            cpu / sent,
            "µs",
            target="well under 1 ms (< 0.5 ms)",
            ok=cpu / sent < 0.0005,
        ),
        stage("per-reader path before SMTP, wall (per message)", wall / sent, "µs"),
    ]


def run(env: BenchEnv, readers: int, repeat: int) -> list[Row]:
    rows, (message, body_hash) = rendering(env, repeat)
    rows += signing(env, message, body_hash, repeat * 10)
    rows += bookkeeping(env, readers)
    return rows
