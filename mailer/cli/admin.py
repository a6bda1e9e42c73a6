"""Admin UI commands: ``mailer users create|list|passwd``.

The password is never an option (it would sit in the shell history and in ``ps``): it is
read from standard input with ``--password-stdin`` (scripts), or asked for twice without echo.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import audit, db, users
from mailer.auth import Role
from mailer.cli import app, console, emit, fail
from mailer.cli.commands import JsonOpt
from mailer.models import User

users_app = typer.Typer(help="People who sign in to the admin UI (/admin).")
app.add_typer(users_app, name="users")

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input (one line)."),
]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; the newline that `echo` or a here-string adds is not part of it.
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("create")
def users_create(
    username: str,
    role: Annotated[Role, typer.Option(help="editor, operator or admin")],
    password_stdin: PasswordStdin = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user; prints the new user's id on the first line."""
    password = _read_password(password_stdin)
    with Session(db.get_engine()) as session:
        try:
            user = users.create_user(session, username, password, role)
        except users.UserError as exc:
            raise fail(str(exc)) from exc
        details = {"username": user.username, "role": user.role}
        audit.record(session, audit.cli_actor(), "user.create", f"user:{user.id}", details)
        session.commit()
        data = {"id": user.id, "username": user.username, "role": user.role}
    emit(as_json, data, [str(data["id"]), f"user {data['username']} ({data['role']}) created"])


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """Every user, with their role and last sign-in."""
    with Session(db.get_engine()) as session:
        items = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users.list_users(session)
        ]
    lines = [
        f"{i['id']:>4}  {i['role']:<8} {i['username']}  {i['last_login_at'] or 'never'}"
        for i in items
    ]
    emit(as_json, items, lines)


@users_app.command("passwd")
def users_passwd(username: str, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password; their open sessions end."""
    with Session(db.get_engine()) as session:
        user = session.scalar(
            select(User).where(User.username == users.normalise_username(username))
        )
        if user is None:
            raise fail(f"no user named {username!r}")
        try:
            users.set_password(session, user, _read_password(password_stdin))
        except users.UserError as exc:
            raise fail(str(exc)) from exc
        audit.record(session, audit.cli_actor(), "user.password", f"user:{user.id}")
        session.commit()
        console.print(f"{user.id}\npassword changed", highlight=False)
