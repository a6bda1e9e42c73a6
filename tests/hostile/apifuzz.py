"""Schemathesis against the real app's OpenAPI document, through its Python API (in-process ASGI).

:func:`seed` gives the fuzzer something to find (a story, its alert, a reader, a schedule, a
suppression, an SMTP server, a spare token), :func:`fuzz` runs every operation with an admin
token and records each answer: the status, and whether it was a server error (a 5xx, or an
exception out of the app) or broke its documented schema. Generated requests are steered now
and then towards ids and topics that exist, so the fuzzer gets past "not found".
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailer.auth import create_token
from mailer.web import create_app
from tests.hostile.harness import Newsroom


@dataclass
class Target:
    """The app under test, an admin's headers, and the ids that exist in its database."""

    app: FastAPI
    engine: Engine
    headers: dict[str, str]
    own_token: int
    ids: dict[str, int]
    reader: str
    postgres: bool


def target(room: Newsroom, *, postgres: bool = False) -> Target:
    """The real app (``create_app``) over ``room``'s database, seeded through its own API."""
    room.settings.broker_dir.mkdir(parents=True, exist_ok=True)  # /healthz checks it
    with Session(room.engine) as session:
        own, secret = create_token(session, "admin", "fuzzer")
        session.commit()
    app = create_app(room.settings)
    headers = {"Authorization": f"Bearer {secret}"}
    ids = seed(app, headers)
    return Target(app, room.engine, headers, own, ids, "fuzz.reader@example.com", postgres)


def seed(app: FastAPI, headers: dict[str, str]) -> dict[str, int]:
    with TestClient(app, headers=headers) as client:

        def made(path: str, body: dict[str, Any], key: str = "id") -> int:
            answer = client.post(f"/api/v1{path}", json=body)
            assert answer.status_code in (200, 201), (path, answer.text)
            return int(answer.json()[key])

        reader = {"email": "fuzz.reader@example.com", "name": "أمل"}
        imported = client.post(
            "/api/v1/subscribers/import", json={"readers": [reader], "consented": True}
        )
        assert imported.status_code == 200, imported.text
        story = made(
            "/stories",
            {"title": "عاجل: اختبار", "url": "https://news.example.com/fuzz", "topic": "breaking"},
        )
        return {
            "story_id": story,
            "edition_id": made("/alerts", {"story_id": story}, "edition_id"),
            "schedule_id": made("/schedules", {"topic": "syria", "at": "08:00"}),
            "suppression_id": made("/suppressions", {"email": "gone@example.com"}),
            "server_id": made("/smtp-servers", {"name": "spare", "url": "smtp://127.0.0.1:9"}),
            "token_id": made("/tokens", {"role": "editor", "name": "spare"}),
            "subscriber_id": client.get("/api/v1/subscribers").json()["items"][0]["id"],
        }


# -- one run -------------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    schema_violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(n for code, n in self.statuses.items() if code < 400)

    @property
    def rejected(self) -> int:
        return sum(n for code, n in self.statuses.items() if 400 <= code < 500)


def _steer(case: Any, data: st.DataObject, t: Target) -> None:
    """Now and then point a generated request at things that exist; keep our own token alive."""
    for name in list(case.path_parameters or {}):
        if name in t.ids and data.draw(st.booleans()):
            case.path_parameters[name] = t.ids[name]
        if name == "token_id" and case.path_parameters[name] == t.own_token:
            case.path_parameters[name] = t.ids["token_id"]
    if case.query and "reader" in case.query and data.draw(st.booleans()):
        case.query["reader"] = t.reader
    if isinstance(case.body, dict):
        if "topic" in case.body and data.draw(st.booleans()):
            case.body["topic"] = data.draw(st.sampled_from(["breaking", "syria", "economy"]))
        if "story_id" in case.body and data.draw(st.booleans()):
            case.body["story_id"] = t.ids["story_id"]
        for reader in case.body.get("readers") or []:
            if isinstance(reader, dict) and data.draw(st.booleans()):
                reader["email"] = f"r{data.draw(st.integers(0, 10**6))}@example.com"


def _failure(case: Any, exc: BaseException) -> str:
    """The failing request as a curl command (token left out), and what went wrong."""
    text = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{case.as_curl_command()[:300]}\n    {type(exc).__name__}: {text[:300]}"


def fuzz(t: Target, examples: int, *, fixed: bool = False) -> FuzzReport:
    """Every operation, ``examples`` generated requests each (``fixed``: the same every run)."""
    report = FuzzReport()
    schema = schemathesis.openapi.from_asgi("/openapi.json", t.app)
    started = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: fine here

        @given(case=operation.as_strategy(), data=st.data())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=fixed,
        )
        def run(case: Any, data: st.DataObject) -> None:
            _steer(case, data, t)
            report.tried += 1
            try:
                response = case.call(headers=t.headers)
            except Exception as exc:  # raised out of the app: what a client sees as a 500
                report.statuses[500] += 1
                report.server_errors.append(_failure(case, exc))
                return
            report.statuses[response.status_code] += 1
            for check, found in (
                (not_a_server_error, report.server_errors),
                (response_schema_conformance, report.schema_violations),
            ):
                try:
                    case.validate_response(response, checks=[check], headers=t.headers)
                except (AssertionError, BaseExceptionGroup) as exc:
                    found.append(_failure(case, exc))

        run()
    report.seconds = time.perf_counter() - started
    return report
