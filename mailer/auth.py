"""API tokens and roles: who may use which part of the JSON API.

A token's secret is shown once, when it is created; the database keeps only its SHA-256 (hex).
A random 256-bit secret needs no slow password hash: nobody can guess it, and a plain hash makes
lookups one indexed equality.

Roles are not a ladder. An editor publishes stories and triggers alerts; an operator runs the
sends (schedules, editions, subscribers, suppressions) but does not publish; an admin does
everything, tokens and SMTP servers included. :data:`MATRIX` spells that out area by area.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.models import ApiToken, utcnow

#: Printed before the random part, so a leaked secret is recognisable in logs and scanners.
PREFIX: Final = "mlr_"
#: ``last_used_at`` is refreshed at most this often: one write per request would serialise
#: every API call on SQLite's single writer.
TOUCH_EVERY: Final = timedelta(seconds=60)


class Role(StrEnum):
    EDITOR = "editor"
    OPERATOR = "operator"
    ADMIN = "admin"


class Area(StrEnum):
    """A part of the API; every route belongs to exactly one."""

    TOPICS = "topics"
    STORIES = "stories"
    ALERTS = "alerts"
    SCHEDULES = "schedules"
    EDITIONS = "editions"
    SUBSCRIBERS = "subscribers"
    SUPPRESSIONS = "suppressions"
    STATS = "stats"
    TOKENS = "tokens"
    SMTP = "smtp"
    AUDIT = "audit"


#: The role matrix. Written out in full rather than derived, so a reviewer reads it at a glance.
MATRIX: Final[dict[Role, frozenset[Area]]] = {
    Role.EDITOR: frozenset({Area.TOPICS, Area.STORIES, Area.ALERTS}),
    Role.OPERATOR: frozenset(
        {
            Area.TOPICS,
            Area.SCHEDULES,
            Area.EDITIONS,
            Area.SUBSCRIBERS,
            Area.SUPPRESSIONS,
            Area.STATS,
        }
    ),
    Role.ADMIN: frozenset(Area),
}


def allowed(role: str, area: Area) -> bool:
    """Whether a token of ``role`` may use ``area`` (unknown roles may use nothing)."""
    try:
        return area in MATRIX[Role(role)]
    except ValueError:
        return False


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The caller of one request, as the audit log names it."""

    token_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"


def create_token(session: Session, role: str, name: str = "") -> tuple[int, str]:
    """Store a new token and return ``(id, secret)``; the secret cannot be recovered later."""
    role = Role(role).value  # ValueError for an unknown role
    if any(ch in name for ch in "\r\n\x00"):
        raise ValueError("a token name is one line")
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name.strip()[:100], role=role, token_hash=hash_secret(secret))
    token.created_at = utcnow()
    session.add(token)
    session.flush()
    return token.id, secret


def authenticate(session: Session, secret: str, now: datetime | None = None) -> ApiToken | None:
    """The live token with this secret, or None; refreshes ``last_used_at`` (caller commits)."""
    if not secret.startswith(PREFIX):
        return None
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
    if token is None or token.revoked_at is not None:
        return None
    moment = now or utcnow()
    if token.last_used_at is None or moment - token.last_used_at >= TOUCH_EVERY:
        token.last_used_at = moment
    return token


def revoke_token(session: Session, token_id: int, now: datetime | None = None) -> bool:
    """Revoke a token at once; False if there is no such live token."""
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))
