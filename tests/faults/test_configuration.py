"""No delay handed to the broker may outlive its visibility timeout (with Redis, such a
message is redelivered while the first copy still waits): every task's retry countdown, every
beat entry, and every ``countdown=``/``eta=`` anywhere in the code.

Extends tests/workers/test_app.py, which checks send_batch and sweep by name: these checks
cover tasks and beat entries added later without anyone remembering to list them.
"""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

from mailer.config import Settings
from workers.app import make_celery

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(broker_url="redis://127.0.0.1:6379/15")


def visibility() -> float:
    options = make_celery(SETTINGS).conf.broker_transport_options
    return float(options["visibility_timeout"])


def seconds(value: object) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    run_every = getattr(value, "run_every", None)  # celery.schedules.schedule
    if isinstance(run_every, timedelta):
        return run_every.total_seconds()
    assert isinstance(value, int | float), f"cannot tell how long {value!r} is"
    return float(value)


def test_every_task_retry_countdown_stays_under_the_visibility_timeout() -> None:
    import workers.tasks  # noqa: F401  (registers the tasks on the app)
    from workers.app import app

    tasks = {name: task for name, task in app.tasks.items() if name.startswith("mailer.")}
    assert "mailer.send_batch" in tasks and "mailer.sweep" in tasks
    for name, task in tasks.items():
        if getattr(task, "retry_backoff", False):
            longest = float(task.retry_backoff_max)
        else:
            longest = float(task.default_retry_delay)
        assert longest < visibility(), f"{name} may retry after {longest} s"


def test_every_beat_entry_runs_and_expires_within_the_visibility_timeout() -> None:
    schedule = make_celery(SETTINGS).conf.beat_schedule
    assert schedule
    for name, entry in schedule.items():
        assert seconds(entry["schedule"]) < visibility(), name
        expires = entry.get("options", {}).get("expires")
        assert expires is not None, f"beat entry {name} never expires: a backlog replays"
        assert seconds(expires) < visibility(), name


def _delays(path: Path) -> list[tuple[int, str, ast.expr]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in ("countdown", "eta"):
                    found.append((node.lineno, keyword.arg, keyword.value))
    return found


def test_no_code_hands_the_broker_a_countdown_or_eta_past_the_visibility_timeout() -> None:
    """Literal delays must be shorter; any computed one fails here until someone bounds it
    (and adds it to this test), since long delays belong in ``next_attempt_at``."""
    offenders = []
    for path in sorted([*REPO.glob("mailer/**/*.py"), *REPO.glob("workers/**/*.py")]):
        for line, name, value in _delays(path):
            where = f"{path.relative_to(REPO)}:{line} {name}="
            if isinstance(value, ast.Constant) and isinstance(value.value, int | float):
                if value.value >= visibility():
                    offenders.append(f"{where}{value.value}")
            else:
                offenders.append(f"{where}{ast.unparse(value)} (computed: bound it)")
    assert offenders == []


def test_the_scan_finds_countdowns(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("task.apply_async(args=[1], countdown=99999)\ntask.retry(eta=when)\n")
    assert [(line, name) for line, name, _ in _delays(sample)] == [(1, "countdown"), (2, "eta")]
