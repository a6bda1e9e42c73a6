"""Scenario 3, the naive baseline: per reader render + premailer + a new SMTP connection.

It runs in as many processes as the service's workers, over the same sink, in the same run;
it exists only as the yardstick for the "≥ 20× naive" target.
"""

from __future__ import annotations

from benchmarks.clients import run_clients
from benchmarks.content import story_views
from benchmarks.env import BenchEnv
from benchmarks.naive_client import KEY, naive_sender
from benchmarks.report import Row


def run(env: BenchEnv, readers: int, clients: int) -> list[Row]:
    env.sink.reset()
    values = {k: str(v) for k, v in env.values.items()}
    share = max(1, readers // clients)
    args = [(values, story_views(), env.sink.address[1], share) for _ in range(clients)]
    result = run_clients(naive_sender, args, timeout=900)
    received = env.sink.key(KEY).count
    if received != result.messages:
        raise RuntimeError(f"sink counted {received} of {result.messages} messages")
    return [
        Row(
            "naive baseline",
            readers=result.messages,
            messages_per_s=result.rate,
            cpu_ms_per_message=result.cpu * 1000 / result.messages,
            peak_rss_mib=result.peak_rss_mib,
            figure=f"{clients} processes: render + premailer + new connection per reader",
        )
    ]
