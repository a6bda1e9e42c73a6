"""Servers of a test's own, to restart and flush without touching anyone else's.

The shared PostgreSQL (5432) and Redis (6379) serve every other test running at the same time,
so a fault test never restarts, stops or flushes them. Instead:

* :class:`RedisServer` runs ``redis-server`` on a free port with no persistence, so a restart
  comes back empty (a flushed broker);
* :class:`PostgresCluster` runs a throw-away cluster (``initdb`` as the ``postgres`` user,
  since it refuses root — DESIGN.md §7) on a free port, in a folder the ``postgres`` user owns;
* :func:`fault_stack` builds a :class:`tests.support.stack.Stack` (real Celery workers) against
  them and a :class:`~tests.support.faulty_smtp.FaultySMTPServer`.

Every helper cleans up after itself, also when a test fails. A missing binary raises
:class:`ServiceUnavailable`; :func:`require` turns it into a skip on a developer's machine and a
failure under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import redis

from tests.support.faulty_smtp import FaultySMTPServer
from tests.support.stack import (
    IN_CI,
    PG_URL,
    Stack,
    build_stack,
    create_pg_database,
    drop_pg_database,
    need_service,
)

T = TypeVar("T")
LOCALHOST = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """A server this test needs cannot be started here."""


def require(start: Callable[[], T]) -> T:
    """Start a service; skip (developer's machine) or fail (CI) with the reason if it cannot."""
    try:
        return start()
    except ServiceUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _wait(probe: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            probe()
            return
        except Exception as exc:  # not up yet
            error = exc
            time.sleep(0.05)
    raise ServiceUnavailable(f"{what} did not come up within {timeout:g} s: {error}")


# -- Redis -------------------------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, no RDB or AOF: a restart empties it."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise ServiceUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=3)

    def start(self) -> None:
        assert self.binary is not None
        log = (self.workdir / "redis.log").open("ab")
        argv = [self.binary, "--port", str(self.port), "--bind", LOCALHOST, "--save", ""]
        argv += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            _wait(self._ping, 10, f"redis-server on port {self.port}")
        except ServiceUnavailable:
            self.stop()
            raise

    def _ping(self) -> None:
        with self.client() as client:
            client.ping()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop it (SIGKILL by default: a crash, nothing written anywhere)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def restart(self, down_seconds: float = 1.0) -> None:
        """Flush, crash, stay down a moment, come back empty on the same port."""
        with contextlib.suppress(redis.RedisError), self.client() as client:
            client.flushall()
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise ServiceUnavailable(
            f"PostgreSQL's {name} is not installed under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql)"
        )
    return found[-1]


class PostgresCluster:
    """A PostgreSQL cluster of this test's own, run as the ``postgres`` user.

    Lives in a fresh folder under the system temporary directory (pytest's own folders are
    private to root, and the server runs as ``postgres``); :meth:`destroy` stops it and
    deletes the folder.
    """

    user = "postgres"

    def __init__(self) -> None:
        self.pg_ctl, initdb = _pg_bin("pg_ctl"), _pg_bin("initdb")
        self.port = free_port()
        self.restarts = 0
        self.root = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        try:
            if os.geteuid() == 0:
                runuser = shutil.which("runuser")
                if runuser is None:
                    raise ServiceUnavailable("runuser is missing: cannot run initdb as postgres")
                shutil.chown(self.root, self.user, self.user)
                self._as_user = [runuser, "-u", self.user, "--"]
            self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8"])
        except (ServiceUnavailable, LookupError, OSError, subprocess.SubprocessError) as exc:
            shutil.rmtree(self.root, ignore_errors=True)
            if isinstance(exc, ServiceUnavailable):
                raise
            detail = getattr(exc, "stderr", b"") or b""
            raise ServiceUnavailable(
                f"cannot create a PostgreSQL cluster ({exc}): {detail.decode(errors='replace')}"
            ) from exc

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        subprocess.run(self._as_user + argv, check=True, capture_output=True, timeout=timeout)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@{LOCALHOST}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{LOCALHOST}:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={LOCALHOST} "
            "-c fsync=off -c max_connections=100"
        )
        try:
            argv = [self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log)]
            self._run([*argv, "-w", "-t", "60", "start"])
        except subprocess.CalledProcessError as exc:
            raise ServiceUnavailable(f"pg_ctl start failed: {self.log_tail()}") from exc
        _wait(lambda: psycopg.connect(self.admin_url, connect_timeout=3).close(), 30, "PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown that disconnects every client (what a restart does)."""
        if (self.data / "postmaster.pid").exists():
            self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def create_database(self) -> str:
        name = f"mailer_f_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# -- the shared PostgreSQL, for a database of the test's own ------------------------------------


@contextlib.contextmanager
def shared_pg_database() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL (created and dropped here: the server itself
    is never restarted)."""
    try:
        need_service(
            "PostgreSQL",
            lambda: psycopg.connect(
                PG_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3
            ).close(),
        )
    except pytest.skip.Exception as exc:
        raise ServiceUnavailable(str(exc)) from exc
    url = create_pg_database()
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            drop_pg_database(url)


# -- which worker holds a connection ----------------------------------------------------------


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket from ``local_port`` to ``remote_port`` (Linux /proc)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)) == (
                    local_port,
                    remote_port,
                ):
                    return inode
    return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # "pid (comm) state ppid pgrp …": comm may hold spaces, so split after ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry.name))
    return members


def group_holding(client_port: int, server_port: int, groups: list[int]) -> int | None:
    """Which of the process ``groups`` holds the client end of a connection to our server."""
    inode = _socket_inode(client_port, server_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for group in groups:
        for pid in _group_members(group):
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd")
                if any(os.readlink(fd) == target for fd in fds.iterdir()):
                    return group
    return None


# -- a whole stack against them ---------------------------------------------------------------


@contextlib.contextmanager
def fault_stack(
    tmp: Path, smtp: FaultySMTPServer, *, database_url: str, broker_url: str, **overrides: Any
) -> Iterator[Stack]:
    """A :class:`Stack` on the given database and broker, sending to ``smtp`` with a short
    timeout (2 s per message, 1 s to connect). Workers are stopped on the way out."""
    values: dict[str, Any] = {"smtp_url": smtp.smtp_url()}
    values.update(overrides)
    # "sqlite" keeps build_stack away from the shared servers; the URLs below replace its own.
    stack = build_stack("sqlite", tmp, database_url=database_url, broker_url=broker_url, **values)
    if database_url.startswith("postgresql"):
        stack.kind = "postgres"
    try:
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stack.stop_workers()
        stack.smtp.stop()  # build_stack's own aiosmtpd server, unused here
        stack.engine.dispose()
