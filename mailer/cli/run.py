"""Process commands: serve (the whole embedded stack), worker, beat, sink.

Celery is started as its own program (``python -m celery``) so that ``mailer`` never imports it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Annotated

import typer

from mailer import db, migrate
from mailer.cli import app, console, settings
from mailer.dispatch import ALERTS_QUEUE, DIGESTS_QUEUE, MAINTENANCE_QUEUE
from mailer.models import Story, Subscriber

ALL_QUEUES = f"{ALERTS_QUEUE},{DIGESTS_QUEUE},{MAINTENANCE_QUEUE}"


def celery_worker_argv(queues: str, concurrency: int, beat: bool, name: str) -> list[str]:
    s = settings()
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
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "INFO",
    ]
    if s.broker_is_embedded:
        argv.append("--without-heartbeat")
    if beat:
        argv += ["-B", "-s", str((s.data_dir / "celerybeat-schedule").resolve())]
    return argv


@app.command("worker")
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated: alerts, digests, maintenance.")
    ] = ALL_QUEUES,
    concurrency: Annotated[int, typer.Option()] = 0,
    beat: Annotated[
        bool, typer.Option("--beat", help="Also run the scheduler (one per site).")
    ] = False,
    name: str = "worker",
) -> None:
    """Run a Celery worker (prefork) on the given queues."""
    argv = celery_worker_argv(queues, concurrency or settings().worker_concurrency, beat, name)
    os.execv(sys.executable, argv)


@app.command("beat")
def beat() -> None:
    """Run the scheduler: the sweeper tick (and schedules). Run exactly one."""
    schedule = (settings().data_dir / "celerybeat-schedule").resolve()
    schedule.parent.mkdir(parents=True, exist_ok=True)
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "beat",
            "-s",
            str(schedule),
            "-l",
            "INFO",
        ],
    )


@app.command("sink")
def sink() -> None:
    """Run the built-in SMTP sink: every message it receives is stored under the data folder."""
    from mailer.sink import run_sink

    host, port = settings().sink_address
    console.print(f"SMTP sink on {host}:{port}, storing into {settings().sink_dir}")
    run_sink(host, port, settings().sink_dir)


def _counts() -> tuple[int, int]:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    with Session(db.get_engine()) as session:
        stories = session.scalar(select(func.count()).select_from(Story)) or 0
        readers = session.scalar(select(func.count()).select_from(Subscriber)) or 0
    return stories, readers


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    web_only: Annotated[bool, typer.Option("--web-only", help="Only the web app.")] = False,
    demo: Annotated[bool, typer.Option(help="Load sample stories and readers if empty.")] = True,
) -> None:
    """Start the service. On the embedded default: web, workers + beat, SMTP sink, samples."""
    import uvicorn

    s = settings()
    host, port = host or s.web_host, port or s.web_port
    if web_only:
        uvicorn.run("mailer.web:create_app", factory=True, host=host, port=port)
        return
    s.data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MAILER_DATA_DIR"] = str(s.data_dir.resolve())  # children agree on the folder
    migrate.upgrade(s.database)
    if demo and _counts() == (0, 0):
        from mailer.cli.commands import load_demo

        load_demo()
    stories, readers = _counts()
    sink_note = ""
    children: list[subprocess.Popen[bytes]] = []
    sink_host, _ = s.sink_address
    embedded_sink = s.broker_is_embedded and sink_host in ("127.0.0.1", "localhost")
    if embedded_sink:
        sink_note = f"  (built-in sink: one .eml per message in {s.sink_dir})"
    logs = (s.data_dir / "logs").resolve()
    logs.mkdir(exist_ok=True)
    if embedded_sink:
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "mailer.cli.main", "sink"],
                stdout=(logs / "sink.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
        )
    children.append(
        subprocess.Popen(
            celery_worker_argv(ALL_QUEUES, s.worker_concurrency, True, "embedded"),
            stdout=(logs / "worker.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
    )
    console.print(
        f"""[bold]mailer is running[/bold]
  web:        http://{host}:{port}/  (health: /healthz)
  database:   {s.database}
  broker:     {s.broker if not s.broker_is_embedded else f"filesystem, {s.broker_dir}"}
  SMTP:       {s.smtp_url}{sink_note}
  workers:    {s.worker_concurrency} processes on {ALL_QUEUES}, with beat; logs in {logs}
  content:    {stories} stories, {readers} readers
try, in another terminal:
  .venv/bin/mailer stories list
  .venv/bin/mailer alert 1 --wait
  .venv/bin/mailer digest send syria --cadence daily --wait
  .venv/bin/mailer editions show 1""",
        highlight=False,
    )

    def stop(*_: object) -> None:
        for child in children:
            child.terminate()
        deadline = time.monotonic() + 20
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    def terminate(*_: object) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, terminate)
    try:
        uvicorn.run(
            "mailer.web:create_app", factory=True, host=host, port=port, log_level="warning"
        )
    finally:
        stop()
