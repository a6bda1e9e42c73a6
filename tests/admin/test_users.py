"""Admin users: argon2 hashes, sign-in checks, and ``mailer users create`` as scripts use it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from mailer import cli, db, users
from mailer.config import get_settings
from mailer.db import make_engine
from mailer.models import User
from tests.admin.world import PASSWORD, AdminWorld, copy_database, csrf_of


def test_passwords_are_stored_as_argon2id_hashes(world: AdminWorld) -> None:
    with Session(world.engine) as session:
        user = users.create_user(session, "Sara", "a long enough secret", "editor")
        session.commit()
        assert user.username == "sara"
        assert user.password_hash.startswith("$argon2id$")
        assert "a long enough secret" not in user.password_hash


@pytest.mark.parametrize(
    ("username", "password", "role", "problem"),
    [
        ("SARA", "a long enough secret", "editor", "exists already"),
        ("new", "short", "editor", "at least 10"),
        ("new", "a long enough secret", "owner", "role is one of"),
        ("two words", "a long enough secret", "editor", "no spaces"),
        ("", "a long enough secret", "editor", "1 to 100"),
    ],
)
def test_bad_users_are_refused_with_the_reason(
    world: AdminWorld, username: str, password: str, role: str, problem: str
) -> None:
    with Session(world.engine) as session:
        users.create_user(session, "sara", "a long enough secret", "editor")
        with pytest.raises(users.UserError, match=problem):
            users.create_user(session, username, password, role)


def test_authenticate_checks_the_password_and_upgrades_old_hashes(world: AdminWorld) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with Session(world.engine) as session:
        user = session.scalars(select(User).where(User.username == "admin")).one()
        user.password_hash = weak.hash(PASSWORD)  # made years ago, with cheaper parameters
        session.commit()
        assert users.authenticate(session, "admin", "wrong password!") is None
        assert users.authenticate(session, "nobody", PASSWORD) is None
        found = users.authenticate(session, " ADMIN", PASSWORD)
        assert found is not None and found.last_login_at is not None
        assert not users.hasher.check_needs_rehash(found.password_hash)
        session.commit()
        assert users.authenticate(session, "admin", PASSWORD) is not None


@pytest.fixture
def cli_env(
    tmp_path: Path, admin_template: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    data.mkdir()
    copy_database(admin_template, data / "mailer.db")
    monkeypatch.setenv("MAILER_DATA_DIR", str(data))
    monkeypatch.setenv("MAILER_SECRET_KEYS", "test-secret")
    get_settings.cache_clear()
    db.reset_engine()
    try:
        yield data
    finally:
        if db._engine is not None:
            db._engine.dispose()
        db.reset_engine()
        get_settings.cache_clear()


def test_users_create_prints_the_id_first_and_the_user_can_sign_in(cli_env: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli.app,
        ["users", "create", "layla", "--role", "operator", "--password-stdin"],
        input="layla's long password\n",
    )
    assert result.exit_code == 0, result.output
    user_id = int(result.stdout.splitlines()[0])
    engine = make_engine(f"sqlite:///{cli_env / 'mailer.db'}")
    with Session(engine) as session:
        user = session.get(User, user_id)
        assert user is not None and (user.username, user.role) == ("layla", "operator")
    world = AdminWorld(get_settings(), engine)
    browser = world.browser()
    page = browser.get("/admin/login")
    form = {"csrf_token": csrf_of(page), "username": "layla", "password": "layla's long password"}
    assert browser.post("/admin/login", data=form).status_code == 303
    assert browser.get("/admin/schedules").status_code == 200
    world.close()

    again = runner.invoke(
        cli.app,
        ["users", "create", "LAYLA", "--role", "editor", "--password-stdin"],
        input="x" * 12,
    )
    assert again.exit_code == 1
    assert "exists already" in again.output
    listed = runner.invoke(cli.app, ["users", "list", "--json"])
    assert '"username": "layla"' in listed.stdout


def test_users_create_asks_twice_without_echo(cli_env: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["users", "create", "omar", "--role", "editor"],
        input="first password\nsecond password\nfirst password\nfirst password\n",
    )
    assert result.exit_code == 0, result.output
    assert "first password" not in result.output
    assert "do not match" in result.output.lower()
