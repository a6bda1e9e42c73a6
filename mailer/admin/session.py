"""The admin sign-in session: a signed cookie, and the CSRF token that lives inside it.

The cookie holds ``{"uid", "role", "csrf", "pw"}`` signed (and timestamped) with
``MAILER_SECRET_KEYS`` for the purpose ``admin-session``, so it verifies across key rotation
and cannot be forged or moved to another purpose. It is ``HttpOnly`` (scripts never see it),
``SameSite=Lax`` (other sites' forms do not carry it) and scoped to ``/admin``.

Every request re-reads the user: a deleted user, a changed role or a changed password (``pw``
is a fingerprint of the password hash, which has a fresh salt every time) ends the session.

CSRF: each session has its own random token, put in every form as ``csrf_token`` and compared
on every POST. The sign-in form, which comes before any session, uses the reader pages'
signed double-submit pair (:mod:`mailer.csrf`) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailer.auth import Area, allowed
from mailer.config import Settings
from mailer.models import User
from mailer.tokens import BadToken, Tokens

COOKIE = "mailer_admin"
PURPOSE = "admin-session"
FIELD = "csrf_token"
PATH = "/admin"
#: A working day and then some: a session signed longer ago than this must sign in again.
MAX_AGE = 12 * 3600
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class AdminUser:
    """The signed-in person of one request."""

    id: int
    username: str
    role: str
    csrf: str

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"user:{self.id}:{self.username}"

    def may(self, *areas: Area) -> bool:
        """Whether the role may use every one of ``areas``."""
        return all(allowed(self.role, area) for area in areas)


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Sessions:
    """Issues, reads and ends admin sessions for one app."""

    def __init__(self, settings: Settings, engine: Engine, tokens: Tokens) -> None:
        self._settings = settings
        self._engine = engine
        self._tokens = tokens

    def secure(self, request: Request) -> bool:
        """Whether cookies for this request get the Secure flag."""
        # Secure whenever the site is served over HTTPS. A loopback host is exempt so that
        # `mailer serve` on a laptop (plain http://127.0.0.1) can keep a session at all.
        if request.url.scheme == "https":
            return True
        host = (request.url.hostname or "").strip("[]")
        return self._settings.base_url.startswith("https://") and host not in _LOOPBACK

    def start(self, request: Request, response: Response, user: User) -> None:
        """Sign ``user`` in: a new cookie with a new CSRF token (no session fixation)."""
        payload = {
            "uid": user.id,
            "role": user.role,
            "csrf": secrets.token_urlsafe(32),
            "pw": fingerprint(user.password_hash),
        }
        response.set_cookie(
            COOKIE,
            self._tokens.sign_timed(PURPOSE, payload),
            max_age=MAX_AGE,
            path=PATH,
            httponly=True,
            samesite="lax",
            secure=self.secure(request),
        )

    def end(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=PATH, httponly=True, samesite="lax", secure=self.secure(request)
        )

    def _payload(self, request: Request) -> dict[str, Any] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            payload = self._tokens.verify_timed(PURPOSE, raw, MAX_AGE)
        except BadToken:  # tampered with, signed with a retired key, or expired
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("uid"), int):
            return None
        return payload

    def load(self, request: Request) -> AdminUser | None:
        """The signed-in user of the request, or None (cached on the request)."""
        if hasattr(request.state, "admin_user"):
            cached: AdminUser | None = request.state.admin_user
            return cached
        user = None
        payload = self._payload(request)
        if payload is not None:
            with Session(self._engine) as session:
                row = session.get(User, payload["uid"])
                if (
                    row is not None
                    and row.role == payload.get("role")
                    and hmac.compare_digest(
                        fingerprint(row.password_hash), str(payload.get("pw", ""))
                    )
                ):
                    user = AdminUser(row.id, row.username, row.role, str(payload["csrf"]))
        request.state.admin_user = user
        return user


def csrf_ok(user: AdminUser, submitted: object) -> bool:
    """Whether a form's ``csrf_token`` is the session's own."""
    if not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), user.csrf.encode())
