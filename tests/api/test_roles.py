"""Authentication and the role matrix over every API route of the real app.

The routes come from the app's own OpenAPI document, so a route added later is checked
against :data:`EXPECTED` too (and fails until it is given a row there).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.auth import MATRIX, Role, authenticate, create_token, revoke_token
from mailer.db import make_engine
from mailer.models import ApiToken
from mailer.web import create_app
from tests.api.conftest import ROLES, api_settings, copy_database

EDITOR, OPERATOR, ADMIN = {"editor", "admin"}, {"operator", "admin"}, {"admin"}
ANYONE = {"editor", "operator", "admin"}

#: Path prefix (under /api/v1) → the roles allowed. Most specific prefix first.
EXPECTED: list[tuple[str, set[str]]] = [
    ("/topics", ANYONE),
    ("/stories", EDITOR),
    ("/alerts", EDITOR),
    ("/editions", OPERATOR),
    ("/digests", OPERATOR),
    ("/schedules", OPERATOR),
    ("/subscribers", OPERATOR),
    ("/suppressions", OPERATOR),
    ("/stats", OPERATOR),
    ("/tokens", ADMIN),
    ("/smtp-servers", ADMIN),
    ("/audit", ADMIN),
]


def allowed_roles(path: str) -> set[str]:
    for prefix, roles in EXPECTED:
        if path == prefix or path.startswith(prefix + "/"):
            return roles
    raise AssertionError(f"{path} has no row in the role matrix test: add one")


@pytest.fixture
def app_client(tmp_path: Path, migrated: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The real app (create_app) and one token per role, plus a revoked admin token."""
    copy_database(migrated, tmp_path / "mailer.db")
    settings = api_settings(tmp_path, f"sqlite:///{tmp_path / 'mailer.db'}")
    engine = make_engine(settings.database)
    secrets: dict[str, str] = {}
    with Session(engine) as session:
        for role in ROLES:
            _, secrets[role] = create_token(session, role, role)
        revoked_id, secrets["revoked"] = create_token(session, "admin", "old")
        revoke_token(session, revoked_id)
        session.commit()
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        yield client, secrets


def api_operations(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
    ]


def test_every_route_answers_each_caller_as_the_matrix_says(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, secrets = app_client
    operations = api_operations(client)
    assert len(operations) >= 30  # the whole API, not an empty document
    callers: dict[str, dict[str, str]] = {"none": {}, "garbage": {}}
    callers["garbage"] = {"Authorization": "Bearer mlr_not-a-real-token"}
    for name, secret in secrets.items():
        callers[name] = {"Authorization": f"Bearer {secret}"}
    failures = []
    for method, path in operations:
        short = path.removeprefix("/api/v1")
        allowed = allowed_roles(short)
        url = re.sub(r"\{[^}]+\}", "999999", path)  # ids that exist nowhere
        for caller, headers in callers.items():
            # A body that validates nowhere: authorisation must be decided before validation.
            answer = client.request(method, url, headers=headers, json={"unexpected": True})
            if caller in ("none", "garbage", "revoked"):
                expected = "401"
                ok = answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            elif caller in allowed:
                expected = "2xx or 4xx other than 401/403"
                ok = answer.status_code < 500 and answer.status_code not in (401, 403)
            else:
                expected = "403"
                ok = answer.status_code == 403
            if not ok:
                failures.append(f"{method} {short} as {caller}: {answer.status_code}, {expected}")
    assert not failures, "\n".join(failures)


def test_the_matrix_matches_the_issue() -> None:
    assert MATRIX[Role.ADMIN] >= MATRIX[Role.EDITOR] | MATRIX[Role.OPERATOR]
    assert "alerts" in MATRIX[Role.EDITOR] and "alerts" not in MATRIX[Role.OPERATOR]
    assert "editions" in MATRIX[Role.OPERATOR] and "editions" not in MATRIX[Role.EDITOR]
    assert not {"tokens", "smtp"} & (MATRIX[Role.EDITOR] | MATRIX[Role.OPERATOR])


def test_openapi_describes_every_route_with_schemas_and_security(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = app_client
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["token"]["description"],
    }
    problems = []
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            if operation.get("security") != [{"token": []}]:
                problems.append(f"{where}: no bearer security")
            if not operation.get("summary"):
                problems.append(f"{where}: no summary")
            for code in ("401", "403"):
                if code not in operation["responses"]:
                    problems.append(f"{where}: {code} not documented")
            success = [c for c in operation["responses"] if c.startswith("2")]
            for code in success:
                content = operation["responses"][code].get("content")
                if code != "204" and not content:
                    problems.append(f"{where}: {code} has no schema")
            # An action on one item (POST …/{id}/cancel) needs no body; anything else does.
            action = re.search(r"/\{[^}]+\}/[a-z-]+$", path)
            if method in ("post", "patch") and "requestBody" not in operation and not action:
                problems.append(f"{where}: no request body schema")
    assert not problems, "\n".join(problems)
    assert client.get("/docs").status_code == 200


def test_tokens_are_stored_hashed_shown_once_and_revocable(tmp_path: Path, migrated: Path) -> None:
    copy_database(migrated, tmp_path / "mailer.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'mailer.db'}")
    with Session(engine) as session:
        token_id, secret = create_token(session, "editor", "desk")
        session.commit()
        stored = session.get(ApiToken, token_id)
        assert stored is not None
        assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str(session.execute(select(ApiToken.__table__)).all())
        found = authenticate(session, secret)
        assert found is not None and found.id == token_id and found.last_used_at is not None
        assert authenticate(session, secret + "x") is None
        assert authenticate(session, "") is None
        assert revoke_token(session, token_id)
        assert not revoke_token(session, token_id)  # already revoked
        assert authenticate(session, secret) is None
        with pytest.raises(ValueError):
            create_token(session, "superuser", "x")
    engine.dispose()


def test_a_revoked_token_is_refused_on_the_next_request(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, secrets = app_client
    admin = {"Authorization": f"Bearer {secrets['admin']}"}
    made = client.post("/api/v1/tokens", headers=admin, json={"role": "editor", "name": "temp"})
    assert made.status_code == 201
    temp = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert client.get("/api/v1/stories", headers=temp).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin).json()
    assert all("secret" not in t and "token_hash" not in t for t in listed)
    assert client.delete(f"/api/v1/tokens/{made.json()['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/stories", headers=temp).status_code == 401
