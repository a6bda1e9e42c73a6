"""The production stack as an operator relies on it: docker-compose.yml, Dockerfile, .dockerignore.

No Docker engine runs here, so the compose file is checked against the Compose Specification's
JSON Schema (in ``shared/schemas/`` beside the repository) and by assertions on what matters in
operation: every service is there with a health check, alerts never queue behind digests, and
nothing starts before the database is migrated.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "compose-spec.json"
IN_CI = os.environ.get("CI", "").lower() == "true"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "mailpit",
    "web",
    "worker-alerts",
    "worker-digests",
    "beat",
}
APP_COMMANDS = {
    "migrate": ["mailer", "db", "upgrade"],
    "web": ["mailer", "serve", "--web-only", "--host", "0.0.0.0"],
    "worker-alerts": ["mailer", "worker", "--queues", "alerts,maintenance", "--concurrency", "2"],
    "worker-digests": ["mailer", "worker", "--queues", "digests", "--concurrency", "4"],
    "beat": ["mailer", "beat"],
}

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _app_services(services: dict[str, Service]) -> dict[str, Service]:
    """The services that run the application image (built from the Dockerfile)."""
    return {name: svc for name, svc in services.items() if "build" in svc}


def _long_running(services: dict[str, Service]) -> dict[str, Service]:
    return {name: svc for name, svc in services.items() if svc.get("restart") != "no"}


def _queues(service: Service) -> set[str]:
    command = service["command"]
    return set(command[command.index("--queues") + 1].split(","))


# --- The schema ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    not SCHEMA_FILE.exists() and not IN_CI,
    reason=f"{SCHEMA_FILE} not found: shared/ is not cloned beside the repository",
)
def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    assert SCHEMA_FILE.exists(), f"{SCHEMA_FILE} is missing: CI clones shared/ beside the repo"
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # jsonschema does not recognise this spelling of the draft-07 URI (https, no '#') and would
    # fall back to draft 2020-12, so the validator class is chosen here from the declared draft.
    assert "draft-07" in schema["$schema"]
    Draft7Validator.check_schema(schema)
    validator = Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)

    # The check can fail: a misspelt key in a service is caught.
    broken = copy.deepcopy(compose)
    broken["services"]["web"]["helthcheck"] = broken["services"]["web"].pop("healthcheck")
    assert not validator.is_valid(broken)


# --- What an operator relies on ------------------------------------------------------------------


def test_every_required_service_exists(services: dict[str, Service]) -> None:
    assert services.keys() >= REQUIRED_SERVICES


def test_app_services_run_the_documented_commands(services: dict[str, Service]) -> None:
    assert {name: services[name].get("command") for name in APP_COMMANDS} == APP_COMMANDS


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Service]) -> None:
    long_running = _long_running(services)
    assert long_running.keys() >= REQUIRED_SERVICES
    for name, svc in long_running.items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check.get("test") and check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert svc.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_web_publishes_its_port_and_checks_healthz(services: dict[str, Service]) -> None:
    web = services["web"]
    assert "8000:8000" in web["ports"]
    assert any("http://127.0.0.1:8000/healthz" in part for part in web["healthcheck"]["test"])


def test_alerts_and_digests_have_their_own_workers(services: dict[str, Service]) -> None:
    commands = {name: svc.get("command", []) for name, svc in services.items()}
    worker_names = [name for name, cmd in commands.items() if cmd[:2] == ["mailer", "worker"]]
    # A worker without --queues would consume Celery's default queue, not ours.
    assert all("--queues" in commands[name] for name in worker_names)
    workers = {name: _queues(services[name]) for name in worker_names}
    assert "alerts" in workers["worker-alerts"]
    assert "digests" in workers["worker-digests"]
    alert_consumers = {name for name, queues in workers.items() if "alerts" in queues}
    digest_consumers = {name for name, queues in workers.items() if "digests" in queues}
    # An alert never waits behind a digest: no worker consumes both.
    assert not alert_consumers & digest_consumers


def test_app_services_share_one_environment(services: dict[str, Service]) -> None:
    apps = _app_services(services)
    assert set(APP_COMMANDS) <= apps.keys()
    env = apps["web"]["environment"]
    for name, svc in apps.items():
        extra = {k: v for k, v in svc["environment"].items() if env.get(k) != v}
        # Only worker-digests differs: it yields to the separate alert workers.
        allowed = {"MAILER_DIGESTS_YIELD_TO_ALERTS": "true"} if name == "worker-digests" else {}
        assert extra == allowed, name
        assert env.items() <= svc["environment"].items(), name
    assert env["MAILER_DATABASE_URL"].startswith("postgresql+psycopg://mailer:")
    assert env["MAILER_DATABASE_URL"].endswith("@postgres:5432/mailer")
    assert env["MAILER_BROKER_URL"] == "redis://redis:6379/0"
    assert "mailpit:1025" in env["MAILER_SMTP_URL"]
    assert "MAILER_BASE_URL" in env
    # No default secret: the stack refuses to start until the operator sets them.
    for name in ("MAILER_SECRET_KEYS", "MAILER_HASH_KEY"):
        assert env[name].startswith(f"${{{name}:?"), name


def test_app_services_start_after_healthy_servers_and_migrations(
    services: dict[str, Service],
) -> None:
    for name in ("web", "worker-alerts", "worker-digests", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_keeps_its_data_in_a_named_volume(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    volume, target = services["postgres"]["volumes"][0].split(":")[:2]
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]


@pytest.mark.skipif(
    importlib.util.find_spec("mailer.cli") is None, reason="mailer/cli.py is not written yet"
)
@pytest.mark.parametrize("service", sorted(APP_COMMANDS))
def test_the_cli_accepts_the_compose_commands(service: str) -> None:
    from typer.testing import CliRunner

    from mailer.cli import app

    args = APP_COMMANDS[service][1:]
    # --help stops before anything runs, but only once every option before it has parsed.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"mailer {shlex.join(args)}: {result.output}"


# --- The image -----------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    joined = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


def _copies() -> dict[str, PurePosixPath]:
    """Each COPY source mapped to its absolute destination in the image."""
    workdir = PurePosixPath("/")
    copies: dict[str, PurePosixPath] = {}
    for instruction, args in _instructions():
        if instruction == "WORKDIR":
            workdir = workdir / args
        elif instruction == "COPY":
            *sources, dest = shlex.split(args)
            into_folder = dest.endswith("/") or len(sources) > 1
            for source in sources:
                target = workdir / dest
                if into_folder and not source.endswith("/"):
                    target /= PurePosixPath(source).name  # a file copied into a folder
                copies[source.rstrip("/")] = target  # a folder's contents become the target
    return copies


def test_image_ships_templates_beside_the_imported_package() -> None:
    copies = _copies()
    # mailer.rendering finds templates at <package folder>/../templates.
    assert copies["templates"] == copies["mailer"].parent / "templates"
    assert {"pyproject.toml", "README.md", "mailer", "workers", "templates"} <= copies.keys()
    env = " ".join(args for instruction, args in _instructions() if instruction == "ENV")
    # The package is imported from the copied tree, where templates/ sits beside it.
    assert f"PYTHONPATH={copies['mailer'].parent}" in env
    assert "MAILER_DATA_DIR=/app/var" in env


def test_image_runs_as_an_unprivileged_user_without_dev_extras() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install ." in runs
    assert "[dev]" not in runs
    assert ("EXPOSE", "8000") in instructions
    cmd = [json.loads(args) for instruction, args in instructions if instruction == "CMD"]
    assert cmd == [APP_COMMANDS["web"]]


def test_dockerignore_keeps_out_local_state_but_not_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "var"} <= set(patterns)
    for needed in _copies():
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), needed
