"""Admin UI users: editors, operators and admins who sign in to ``/admin`` with a password.

Passwords are hashed with argon2id (argon2-cffi's :class:`PasswordHasher`, whose defaults
follow RFC 9106's recommendations); a hash made with older parameters is upgraded at the next
successful sign-in. Roles are those of the API tokens (:class:`mailer.auth.Role`), so one role
matrix governs both.

Sign-in takes about the same time whether or not the username exists: an unknown user's
password is checked against a dummy hash, so response times do not reveal who has an account.
"""

from __future__ import annotations

import contextlib
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.auth import Role
from mailer.models import User, utcnow

USERNAME_MAX = 100
PASSWORD_MIN = 10
#: argon2 hashes any length, but a megabyte "password" is a cheap way to burn CPU.
PASSWORD_MAX = 1024

hasher = PasswordHasher()


class UserError(ValueError):
    """A user cannot be created as asked (bad name, weak password, taken name, bad role)."""


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Made once per process with the same parameters as real hashes, so verifying against it
    # costs what verifying a real password costs.
    return hasher.hash(secrets.token_urlsafe(16))


def normalise_username(username: str) -> str:
    """Usernames are compared without surrounding spaces and without case."""
    return username.strip().casefold()


def check_username(username: str) -> str:
    name = normalise_username(username)
    if not name or len(name) > USERNAME_MAX:
        raise UserError(f"a username has 1 to {USERNAME_MAX} characters")
    if not name.isprintable() or any(ch.isspace() for ch in name):
        raise UserError("a username has no spaces or control characters")
    return name


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise UserError(f"a password has at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise UserError(f"a password has at most {PASSWORD_MAX} characters")
    return password


def create_user(session: Session, username: str, password: str, role: str) -> User:
    """Add a user (the caller commits); :class:`UserError` says what is wrong with the input."""
    try:
        role = Role(role).value
    except ValueError:
        raise UserError(f"the role is one of {', '.join(Role)}, not {role!r}") from None
    name = check_username(username)
    check_password(password)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UserError(f"a user named {name!r} exists already")
    user = User(username=name, password_hash=hasher.hash(password), role=role, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user with this name and password, or None; records the sign-in (caller commits)."""
    if len(password) > PASSWORD_MAX:
        return None
    user = session.scalar(select(User).where(User.username == normalise_username(username)))
    if user is None:
        # Same work as for a real user, so timing does not tell which names exist.
        with contextlib.suppress(VerificationError):
            hasher.verify(_dummy_hash(), password)
        return None
    try:
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    user.last_login_at = utcnow()
    return user


def set_password(session: Session, user: User, password: str) -> None:
    """Replace the password (the caller commits); open sessions of the user end with it."""
    user.password_hash = hasher.hash(check_password(password))


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))
