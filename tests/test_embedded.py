"""The README's first command: `make run` starts the whole embedded stack from nothing.

Runs `mailer serve` (what `make run` calls) on an empty data folder, then drives it with the CLI
as a newcomer would: an alert and a digest reach the built-in SMTP sink's folder.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer.cli.main", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, int]]:
    web_port, sink_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATA_DIR=str(tmp_path / "var"),
        MAILER_WEB_PORT=str(web_port),
        MAILER_SMTP_URL=f"smtp://127.0.0.1:{sink_port}",
        MAILER_SWEEP_INTERVAL_SECONDS="1",
        PYTHONPATH=str(REPO),
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer.cli.main", "serve"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text())
        yield env, tmp_path / "var", web_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_make_run_is_mailer_serve() -> None:
    plan = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = [line.strip() for line in plan.splitlines() if line.strip()]
    assert commands[-1].endswith("/mailer serve"), commands


def wait_sent(env: dict[str, str], edition_id: str, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = cli(env, "editions", "show", edition_id, "--json")
        assert shown.returncode == 0, shown.stderr
        data: dict[str, object] = json.loads(shown.stdout)
        if data["status"] == "sent":
            return data
        time.sleep(0.5)
    raise AssertionError(f"edition {edition_id} did not finish: {data}")


def test_embedded_stack_sends_an_alert_and_a_digest_to_the_sink(
    served: tuple[dict[str, str], Path, int],
) -> None:
    env, data_dir, web_port = served
    assert (data_dir / "mailer.db").exists()  # SQLite file
    assert (data_dir / "broker").is_dir()  # filesystem broker: no server
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=5) as answer:
        assert json.loads(answer.read()) == {"database": True, "broker": True}

    stories = json.loads(cli(env, "stories", "list", "--json").stdout)
    assert len(stories) >= 3  # the sample stories were loaded
    alert = cli(env, "alert", "1")
    assert alert.returncode == 0, alert.stderr
    edition_id = alert.stdout.splitlines()[0].strip()
    assert edition_id.isdigit()
    shown = wait_sent(env, edition_id)
    counts = shown["counts"]
    assert isinstance(counts, dict) and counts["sent"] >= 300  # every sample reader

    messages = sorted((data_dir / "sink").glob("*.eml"))
    assert len(messages) == counts["sent"]
    first = email.message_from_bytes(messages[0].read_bytes(), policy=email.policy.default)
    html = first.get_body(preferencelist=("html",))
    assert html is not None and 'dir="rtl"' in html.get_content()

    digest = cli(env, "digest", "send", "syria", "--cadence", "daily")
    assert digest.returncode == 0, digest.stderr
    digest_id = digest.stdout.splitlines()[0].strip()
    digest_counts = wait_sent(env, digest_id)["counts"]
    assert isinstance(digest_counts, dict) and digest_counts["sent"] > 0
    assert len(list((data_dir / "sink").glob("*.eml"))) == counts["sent"] + digest_counts["sent"]
