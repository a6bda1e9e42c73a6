"""The production stack the benchmarks run on, started and torn down per run.

A fresh PostgreSQL database (created and dropped like ``tests.support.stack``), a flushed Redis
database (``/14`` by default, so the test suite's ``/15`` is left alone), the counting SMTP sink
in its own process, and real Celery worker processes started as a deploy would start them
(``python -m celery -A workers.app worker …``) with ``MAILER_*`` environment variables.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from benchmarks.sink import SinkClient
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import Dispatcher
from mailer.migrate import upgrade
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.stories import ensure_topics
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get(
    "MAILER_BENCH_DATABASE_URL",
    os.environ.get("MAILER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
# Database 14 of the test suite's Redis (whose own tests use 15): flushed at start and end.
REDIS_URL = os.environ.get(
    "MAILER_BENCH_REDIS_URL",
    urlunsplit(
        urlsplit(os.environ.get("MAILER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))._replace(
            path="/14"
        )
    ),
)


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def check_services() -> None:
    """Raise when PostgreSQL or Redis cannot be reached (the message names which)."""
    try:
        psycopg.connect(libpq_url(PG_URL), connect_timeout=3).close()
    except Exception as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {PG_URL}: {exc}") from exc
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except Exception as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL}: {exc}") from exc


def create_database() -> str:
    name = f"mailer_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(PG_URL), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(libpq_url(PG_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_sink(tmp: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--ids", str(tmp / "message-ids.txt")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "ready":
        proc.kill()
        raise RuntimeError(f"the SMTP sink did not start: {line!r}")
    return proc, int(line[1])


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM (a warm shutdown for Celery), then SIGKILL the process group if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass
class BenchEnv:
    settings: Settings
    values: dict[str, Any]
    engine: Engine
    tmp: Path
    sink_proc: subprocess.Popen[str]
    sink: SinkClient
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def environ(self, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The environment of a service process: MAILER_* from the settings plus ``extra``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        values = {**self.values, **(extra or {})}
        env.update({f"MAILER_{k.upper()}": str(v) for k, v in values.items()})
        env["PYTHONPATH"] = str(REPO)
        return env

    def settings_with(self, extra: Mapping[str, Any]) -> Settings:
        return Settings(**{**self.values, **extra})

    def service(self, dispatcher: Dispatcher | None = None) -> Service:
        if dispatcher is None:
            dispatcher = CeleryDispatcher(make_celery(self.settings))
        return Service(self.engine, self.settings, dispatcher, Renderer(self.settings))

    # -- workers ---------------------------------------------------------------------------

    def start_worker(
        self,
        queues: str,
        concurrency: int,
        *,
        extra: Mapping[str, Any] | None = None,
        beat: bool = False,
        nice: int = 0,
    ) -> subprocess.Popen[bytes]:
        """A worker as ``mailer worker`` runs one; ``nice`` lowers its CPU priority."""
        name = f"{queues.split(',')[0]}-{uuid.uuid4().hex[:6]}@bench"
        argv = ["nice", "-n", str(nice)] if nice else []
        argv += [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues]
        argv += ["-c", str(concurrency), "-n", name, "--without-mingle", "--without-gossip"]
        argv += ["-l", "WARNING"]
        if beat:
            argv += ["-B", "-s", str(self.tmp / f"beat-{name}")]
        log = (self.tmp / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=self.environ(extra),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        self._wait_ready(proc, name)
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
        app = make_celery(self.settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{self.worker_logs()}")
            if app.control.ping(destination=[name], timeout=0.5):
                return
        raise RuntimeError(f"worker {name} not ready after {timeout}s:\n{self.worker_logs()}")

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            stop(proc)
        self.workers.clear()

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("worker-*.log"))
        )


def open_env(tmp: Path, overrides: Mapping[str, Any] | None = None) -> BenchEnv:
    """Create the database and sink, flush the Redis database; production defaults otherwise."""
    check_services()
    database = create_database()
    sink_proc: subprocess.Popen[str] | None = None
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
        sink_proc, port = start_sink(tmp)
        values: dict[str, Any] = {
            "data_dir": tmp / "data",
            "database_url": database,
            "broker_url": REDIS_URL,
            "smtp_url": f"smtp://127.0.0.1:{port}",
            "base_url": "https://news.example.com",
            "secret_keys": "bench-secret",
            "hash_key": "bench-hash-key",
            **(overrides or {}),
        }
        settings = Settings(**values)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database)
        engine = make_engine(settings.database)
        with Session(engine) as session:
            ensure_topics(session)
            session.commit()
        return BenchEnv(settings, values, engine, tmp, sink_proc, SinkClient(port))
    except BaseException:
        if sink_proc is not None:
            stop(sink_proc)
        drop_database(database)
        raise


def close_env(env: BenchEnv) -> None:
    env.stop_workers()
    stop(env.sink_proc)
    env.engine.dispose()
    drop_database(env.settings.database)
    with contextlib.suppress(Exception):
        redis.Redis.from_url(REDIS_URL).flushdb()
