"""A whole delivery stack for end-to-end tests, on either backend.

``sqlite``: an SQLite file and the embedded filesystem broker (what a newcomer runs).
``postgres``: a fresh PostgreSQL database and Redis (what production runs).
Both use real Celery worker processes and a real aiosmtpd server over TCP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import make_engine
from mailer.migrate import upgrade
from mailer.models import Delivery, Edition
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.stories import StoryInput, ensure_topics, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from tests.support.smtp_server import ScriptedSMTPServer
from workers.app import make_celery
from workers.dispatcher import CeleryDispatcher

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get(
    "MAILER_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MAILER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Short timings so that leases, retries and the sweeper act within a test's patience.
FAST = {
    "lease_seconds": 6.0,
    "retry_base_seconds": 0.5,
    "retry_max_seconds": 2.0,
    "sweep_interval_seconds": 0.5,
    "stall_seconds": 3.0,
    "alert_batch_size": 50,
    "digest_batch_size": 100,
    "claim_chunk": 10,
    "worker_concurrency": 2,
}


def need_service(name: str, probe: Callable[[], object]) -> None:
    """Skip when a server is missing on a developer's machine; fail under CI=true."""
    try:
        probe()
    except Exception as exc:  # any failure to reach it
        message = f"{name} is not reachable ({exc}); set MAILER_TEST_* to point at one"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def pg_admin_url() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


def create_pg_database() -> str:
    name = f"mailer_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url(), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Stack:
    kind: str
    settings: Settings
    env: dict[str, str]
    engine: Engine
    smtp: ScriptedSMTPServer
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def service(self) -> Service:
        app = make_celery(self.settings)
        return Service(self.engine, self.settings, CeleryDispatcher(app), Renderer(self.settings))

    # -- workers ---------------------------------------------------------------------------

    def start_worker(
        self,
        *,
        beat: bool = True,
        queues: str = "alerts,digests,maintenance",
        concurrency: int | None = None,
    ) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency or self.settings.worker_concurrency),
            "-n",
            f"w{n}-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ]
        if self.kind == "sqlite":
            argv.append("--without-heartbeat")
        if beat:
            argv += ["-B", "-s", str(self.tmp / f"beat-{n}")]
        log = (self.tmp / f"worker-{n}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (the main process and its children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop_workers(self) -> None:
        """A deploy's stop: SIGTERM to the main process (warm shutdown), SIGKILL if it lingers."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
            self.kill_worker(proc, signal.SIGKILL)  # also reaps children left in the group
        self.workers.clear()

    def worker_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.tmp.glob("worker-*.log"))
        )

    # -- content ---------------------------------------------------------------------------

    def add_story(
        self, title: str = "عاجل: اختبار", topic: str = "syria", breaking: bool = True
    ) -> int:
        with Session(self.engine) as session:
            story, _ = upsert_story(
                session,
                StoryInput(
                    title=title,
                    url=f"https://news.example.com/{uuid.uuid4().hex}",
                    topic=topic,
                    summary="ملخص الخبر",
                    body_html="<p>نص</p>",
                    is_breaking=breaking,
                ),
            )
            session.commit()
            return story.id

    def add_readers(
        self,
        count: int,
        *,
        topics: tuple[str, ...] = ("breaking",),
        cadence: str = "instant",
        start: int = 1,
        domain: str = "example.com",
    ) -> None:
        rows = [
            ReaderRow(
                line=i, email=f"reader{i:06d}@{domain}", name="قارئ", topics=topics, cadence=cadence
            )
            for i in range(start, start + count)
        ]
        report = import_readers(self.engine, rows, self.settings, consented=True)
        assert not report.errors, report.errors[:3]

    # -- observing -------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.worker_logs()}")

    def edition_status(self, edition_id: int) -> str:
        with Session(self.engine) as session:
            edition = session.get(Edition, edition_id)
            assert edition is not None
            return edition.status

    def wait_finished(self, edition_id: int, timeout: float = 120) -> None:
        self.wait_until(
            lambda: self.edition_status(edition_id) in ("sent", "failed"),
            timeout,
            f"edition {edition_id} to finish",
        )

    def deliveries(self, edition_id: int) -> list[Any]:
        with Session(self.engine) as session:
            return list(
                session.execute(
                    select(
                        Delivery.id,
                        Delivery.subscriber_id,
                        Delivery.status,
                        Delivery.attempts,
                        Delivery.last_code,
                        Delivery.last_response,
                        Delivery.message_id,
                    )
                    .where(Delivery.edition_id == edition_id)
                    .order_by(Delivery.id)
                ).all()
            )


def build_stack(kind: str, tmp: Path, **overrides: Any) -> Stack:
    smtp = ScriptedSMTPServer()
    smtp.start()
    values: dict[str, Any] = dict(FAST)
    values.update(
        data_dir=tmp / "data",
        smtp_url=f"{smtp.url}?timeout=2&connect_timeout=2",
        base_url="https://news.example.com",
        secret_keys="test-secret",
        hash_key="test-hash-key",
    )
    if kind == "postgres":
        need_service(
            "PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close()
        )
        need_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
        values["database_url"] = create_pg_database()
        values["broker_url"] = REDIS_URL
        redis.Redis.from_url(REDIS_URL).flushdb()
    values.update(overrides)
    settings = Settings(**values)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database)
    engine = make_engine(settings.database)
    with Session(engine) as session:
        ensure_topics(session)
        session.commit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({f"MAILER_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(REPO)
    return Stack(kind, settings, env, engine, smtp, tmp)


def teardown_stack(stack: Stack) -> None:
    stack.stop_workers()
    stack.smtp.stop()
    stack.engine.dispose()
    if stack.kind == "postgres":
        drop_pg_database(stack.settings.database)
