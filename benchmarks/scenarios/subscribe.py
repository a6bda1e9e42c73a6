"""Scenario 8: ``POST /subscribe`` under load, on loopback, rate limits raised.

The web app runs as production runs it (one uvicorn process, ``mailer.web:create_app``) with
the Redis rate limiter and the Celery dispatcher (confirmations are queued in Redis; no worker
drains them here, so only the web process is measured). Each simulated browser holds a
keep-alive connection and its own CSRF cookie and field.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time

from benchmarks.env import REPO, BenchEnv, stop
from benchmarks.httpload import probe, run_load
from benchmarks.procs import tree_cpu, worker_peak_rss
from benchmarks.report import Row

NAME = "subscribe endpoint"
LIMITS = {
    "subscribe_limit_per_ip": "1000000/hour",
    "subscribe_limit_per_address": "1000000/hour",
    "limiter": "workers.redis_limiter:RedisLimiter",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_web(env: BenchEnv, port: int, processes: int = 1) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "uvicorn", "mailer.web:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if processes > 1:
        argv += ["--workers", str(processes)]
    log = (env.tmp / "web.log").open("ab")
    proc = subprocess.Popen(
        argv,
        env=env.environ(LIMITS),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web app exited:\n{(env.tmp / 'web.log').read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError("the web app did not start listening within 60 s")


def run(env: BenchEnv, seconds: float, connections: int, processes: int = 1) -> list[Row]:
    port = free_port()
    web = start_web(env, port, processes)
    try:
        if asyncio.run(probe(port, "/subscribe")) == 404:
            return [Row.na(NAME, "web", "no /subscribe route")]
        cpu0 = tree_cpu([web.pid])
        load = asyncio.run(run_load(port, connections, seconds))
        cpu = tree_cpu([web.pid]) - cpu0
        rss = worker_peak_rss([web.pid])
    finally:
        stop(web)
    p50, p99 = load.percentile(50) * 1000, load.percentile(99) * 1000
    requests = len(load.latencies)
    return [
        Row(
            NAME + (f" ({processes} uvicorn processes)" if processes > 1 else ""),
            section="web",
            messages_per_s=load.rate,
            cpu_ms_per_message=cpu * 1000 / requests if requests else None,
            peak_rss_mib=rss,
            figure=(
                f"{load.rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                f"({requests:,} requests, {connections} connections; CPU and RSS of the web "
                "processes)"
            ),
            target="≥ 500 req/s, p99 < 50 ms",
            ok=load.rate >= 500 and p99 < 50,
            values={"requests_per_s": load.rate, "p50_ms": p50, "p99_ms": p99},
        )
    ]
