"""``python -m benchmarks --quick`` runs end to end and reports every scenario.

No timing is asserted (CI machines differ); the figures must exist and be positive. Skips
without PostgreSQL or Redis on a developer's machine, fails under CI=true, like the other
production-stack tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from benchmarks.env import PG_URL, REDIS_URL, libpq_url
from tests.support.stack import REPO, need_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

THROUGHPUT = ("sink ceiling", "naive baseline", "digest end to end")
ROWS = (
    *THROUGHPUT,
    "digest end to end, DKIM-signed",
    "alert latency during a digest",
    "planning",
    "subscribe endpoint",
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    need_service(
        "PostgreSQL", lambda: psycopg.connect(libpq_url(PG_URL), connect_timeout=3).close()
    )
    need_service("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping())
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_BENCH_DATABASE_URL=PG_URL, MAILER_BENCH_REDIS_URL=REDIS_URL)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    for name in ROWS:  # the printed table names every scenario
        assert name in done.stdout, done.stdout
    result: dict[str, object] = json.loads(Path(out).read_text(encoding="utf-8"))
    return result


def rows(result: dict[str, object]) -> dict[str, dict[str, object]]:
    found = result["rows"]
    assert isinstance(found, list)
    return {str(r["scenario"]): r for r in found}


def test_every_scenario_has_a_row(quick: dict[str, object]) -> None:
    names = set(rows(quick))
    for name in ROWS:
        assert name in names
    assert any(name.startswith("memory:") for name in names)
    assert any(name.startswith("stage: ") for name in names)


def test_throughput_rows_have_positive_figures(quick: dict[str, object]) -> None:
    found = rows(quick)
    for name in (*THROUGHPUT, "subscribe endpoint"):
        row = found[name]
        assert isinstance(row["messages_per_s"], float) and row["messages_per_s"] > 0, row
        assert isinstance(row["cpu_ms_per_message"], float) and row["cpu_ms_per_message"] > 0
        assert isinstance(row["peak_rss_mib"], float) and row["peak_rss_mib"] > 0
    signed = found["digest end to end, DKIM-signed"]
    assert signed["messages_per_s"] or str(signed["figure"]).startswith("n/a"), signed


def test_latency_planning_and_stages_are_measured(quick: dict[str, object]) -> None:
    found = rows(quick)
    alert = found["alert latency during a digest"]["values"]
    assert isinstance(alert, dict)
    assert 0 < alert["first_s"] <= alert["last_s"]
    planning = found["planning"]
    assert isinstance(planning["readers"], int) and planning["readers"] > 0
    for name, row in found.items():
        if name.startswith("stage: "):
            values = row["values"]
            assert isinstance(values, dict) and values["seconds"] > 0, row


def test_ratios_are_computed(quick: dict[str, object]) -> None:
    ratios = {r["name"]: r["value"] for r in quick["ratios"]}  # type: ignore[attr-defined]
    assert ratios["ours / sink ceiling"] > 0
    assert ratios["ours / naive baseline"] > 0
