"""Scenario 1, the sink ceiling: prebuilt digest-sized messages over persistent connections.

As many client processes as the project runs sending processes, each with one smtplib
connection, send a ready-made message (only its Message-ID changes) as fast as the sink takes
it. No smtplib sender can beat this on this machine; the other rows are read as fractions of it.
A second row does the same with MAIL, RCPT and DATA pipelined (RFC 2920), as the service does
when the server offers PIPELINING: the ceiling of a sender that pipelines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from benchmarks.blast import SLOT, blaster, pipelined_blaster
from benchmarks.clients import Work, run_clients
from benchmarks.content import digest_template, reader_values, render_digest
from benchmarks.env import BenchEnv
from benchmarks.procs import tree_cpu
from benchmarks.report import Row
from mailer import placeholders as ph
from mailer.rendering import Renderer
from mailer.tokens import Tokens

KEY = "ceiling"


def digest_bytes(env: BenchEnv, key: str = KEY) -> bytes:
    """A full-size personalised digest with ``SLOT`` where the Message-ID's number goes."""
    settings = env.settings
    template = digest_template(settings, render_digest(Renderer(settings)))
    values = reader_values(settings, Tokens(settings), key, 1, format_datetime(datetime.now(UTC)))
    values[ph.MESSAGE_ID] = f"<{key}.{SLOT.decode()}.bench@example.com>"
    return template.personalise(values)


def run(env: BenchEnv, messages: int, clients: int) -> list[Row]:
    message = digest_bytes(env)
    return [
        blast(env, message, messages, clients, blaster, "sink ceiling", "smtplib"),
        blast(env, message, messages, clients, pipelined_blaster, PIPELINED, "pipelining smtplib"),
    ]


PIPELINED = "sink ceiling, pipelined"


def blast(
    env: BenchEnv, message: bytes, messages: int, clients: int, work: Work, name: str, kind: str
) -> Row:
    env.sink.reset()
    share = messages // clients
    sink_cpu = tree_cpu([env.sink_proc.pid])
    result = run_clients(
        work, [(env.sink.address[1], message, share) for _ in range(clients)], timeout=600
    )
    sink_cpu = tree_cpu([env.sink_proc.pid]) - sink_cpu
    received = env.sink.key(KEY).count
    if received != result.messages:
        raise RuntimeError(f"sink counted {received} of {result.messages} messages")
    return Row(
        name,
        readers=result.messages,
        messages_per_s=result.rate,
        cpu_ms_per_message=result.cpu * 1000 / result.messages,
        peak_rss_mib=result.peak_rss_mib,
        figure=(
            f"{clients} {kind} clients, {len(message) / 1024:.0f} KB messages; "
            f"sink CPU {sink_cpu * 1000 / result.messages:.2f} ms/msg"
        ),
        values={"sink_cpu_ms_per_message": sink_cpu * 1000 / result.messages},
    )
