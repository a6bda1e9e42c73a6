"""Signing in and out of ``/admin`` through the real form, and when a session stops counting."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import users
from mailer.admin.signin import LOGIN_LIMIT
from mailer.models import User
from mailer.web import create_app
from tests.admin.world import PASSWORD, AdminWorld, admin_settings, copy_database, csrf_of


def sign_in(
    world: AdminWorld, username: str, password: str, next_: str = "/admin/"
) -> tuple[TestClient, Response]:
    browser = world.browser()
    page = browser.get(f"/admin/login?next={next_}")
    assert page.status_code == 200
    form = {"csrf_token": csrf_of(page), "username": username, "password": password}
    answer = browser.post("/admin/login", data=form | {"next": next_})
    return browser, answer


def test_the_right_password_opens_the_page_asked_for(world: AdminWorld) -> None:
    browser, answer = sign_in(world, "Operator ", PASSWORD, "/admin/schedules")  # any case
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/schedules"
    cookie = answer.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/admin", "SameSite=lax", "Secure"):
        assert flag in cookie
    page = browser.get("/admin/schedules")
    assert page.status_code == 200
    assert "operator · مشغّل" in page.text
    with Session(world.engine) as session:
        user = session.scalars(select(User).where(User.username == "operator")).one()
        assert user.last_login_at is not None
    assert ("user:2:operator", "user.login", "user:2") in world.audit()


def test_a_wrong_password_or_an_unknown_user_gets_the_same_refusal(world: AdminWorld) -> None:
    for username, password in (("admin", "not the password"), ("nobody", PASSWORD)):
        browser, answer = sign_in(world, username, password)
        assert answer.status_code == 401
        assert "اسم المستخدم أو كلمة المرور غير صحيحة" in answer.text
        assert "mailer_admin" not in answer.headers.get("set-cookie", "")
        assert browser.get("/admin/").status_code == 303


def test_the_sign_in_form_needs_its_csrf_token(world: AdminWorld) -> None:
    browser = world.browser()
    browser.get("/admin/login")  # the cookie half, but no field
    answer = browser.post("/admin/login", data={"username": "admin", "password": PASSWORD})
    assert answer.status_code == 403
    assert "mailer_admin" not in answer.headers.get("set-cookie", "")


def test_next_never_leaves_the_admin(world: AdminWorld) -> None:
    for target in ("//evil.example/admin", "https://evil.example/", "/readers"):
        _, answer = sign_in(world, "admin", PASSWORD, target)
        assert answer.headers["location"] == "/admin/"


def test_too_many_attempts_are_refused_even_with_the_right_password(world: AdminWorld) -> None:
    key = "admin-login:testclient:editor"
    for _ in range(10):  # what ten guesses from this address have used up
        world.limiter.hit(key, LOGIN_LIMIT)
    _, answer = sign_in(world, "editor", PASSWORD)
    assert answer.status_code == 429
    assert "محاولات دخول كثيرة" in answer.text
    _, other = sign_in(world, "admin", PASSWORD)  # another user is not locked out
    assert other.status_code == 303


def test_signing_out_ends_the_session(world: AdminWorld) -> None:
    client, _ = sign_in(world, "editor", PASSWORD)
    answer = client.post("/admin/logout", data={"csrf_token": csrf_of(client.get("/admin/"))})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?msg=signed_out"
    assert client.get("/admin/").status_code == 303
    assert "سجّلت الخروج" in client.get("/admin/login?msg=signed_out").text


def test_a_new_password_or_role_ends_open_sessions(world: AdminWorld) -> None:
    editor, operator = world.client("editor"), world.client("operator")
    assert editor.get("/admin/").status_code == 200
    with Session(world.engine) as session:
        user = session.scalars(select(User).where(User.username == "editor")).one()
        users.set_password(session, user, "another long password")
        session.scalars(select(User).where(User.username == "operator")).one().role = "admin"
        session.commit()
    assert editor.get("/admin/").status_code == 303
    assert operator.get("/admin/").status_code == 303


def test_the_web_app_serves_the_admin(tmp_path: Path, admin_template: Path) -> None:
    copy_database(admin_template, tmp_path / "mailer.db")
    app = create_app(admin_settings(tmp_path))
    with TestClient(app, base_url="https://testserver") as client:
        page = client.get("/admin/login")
        assert page.status_code == 200
        assert '<html lang="ar" dir="rtl"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        css = client.get("/admin/static/admin.css")
        assert css.headers["content-type"].startswith("text/css")
        assert "direction: rtl" in css.text
        assert client.get("/admin/static/../config.py").status_code == 404


@pytest.mark.parametrize(
    ("base", "secure"),
    [
        ("https://newsroom.example", True),
        ("http://newsroom.example", True),  # behind a TLS proxy that hides the scheme
        ("http://127.0.0.1:8000", False),  # `mailer serve` on a laptop
    ],
)
def test_cookies_are_secure_except_on_a_laptop(world: AdminWorld, base: str, secure: bool) -> None:
    browser = TestClient(world.app, base_url=base, follow_redirects=False)
    page = browser.get("/admin/login")
    assert ("Secure" in page.headers["set-cookie"]) is secure
    if not secure:  # and the whole sign-in works over plain http there
        form = {"csrf_token": csrf_of(page), "username": "editor", "password": PASSWORD}
        answer = browser.post("/admin/login", data=form)
        assert answer.status_code == 303
        assert "Secure" not in answer.headers["set-cookie"]
        assert browser.get("/admin/").status_code == 200
