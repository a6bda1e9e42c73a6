"""What every API module shares: the bearer-token check, the role check, the services.

Each route depends on :meth:`Api.require` for its :class:`~mailer.auth.Area`: no token or an
unknown or revoked one answers 401 (with ``WWW-Authenticate: Bearer``), a token whose role may
not use the area answers 403. The check runs before the request body is validated, so a caller
without the right learns nothing about the body a route expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailer.auth import Area, Principal, allowed, authenticate
from mailer.config import Settings
from mailer.dispatch import Dispatcher, load_dispatcher
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.transport import SmtpConfig, SmtpTransport, Transport

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `mailer tokens create --role editor|operator|admin`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Problem(BaseModel):
    """Every error answer: a sentence saying what went wrong."""

    detail: str


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No token, or an unknown or revoked one"},
    403: {"model": Problem, "description": "The token's role may not use this route"},
}

Limit = Annotated[int, Query(ge=1, le=1000, description="Most items to return")]
After = Annotated[
    int | None, Query(description="Keyset paging: only items with a larger id than this")
]


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


def conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, message)


def unprocessable(message: str) -> HTTPException:
    """A request that is well-formed but cannot be honoured, in the shape OpenAPI documents
    for 422 (FastAPI's validation errors), so clients parse one format."""
    detail = [{"loc": ["body"], "msg": message, "type": "value_error"}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass
class Api:
    """The configuration, database and services one app's API routes share."""

    settings: Settings
    engine: Engine
    dispatcher: Dispatcher | None = None
    transport_factory: Callable[[], Transport] | None = None
    _service: Service | None = field(default=None, init=False, repr=False)
    _checks: dict[Area, Callable[..., Principal]] = field(default_factory=dict, init=False)

    @property
    def service(self) -> Service:
        # Built on first use: loading the Celery dispatcher reads the broker configuration,
        # which an app that only serves reader pages never needs.
        if self._service is None:
            dispatcher = self.dispatcher or load_dispatcher(self.settings.dispatcher)
            self._service = Service(self.engine, self.settings, dispatcher, Renderer(self.settings))
        return self._service

    def transport(self) -> Transport:
        """A fresh SMTP transport for test sends (the caller closes it)."""
        if self.transport_factory is not None:
            return self.transport_factory()
        return SmtpTransport(SmtpConfig.from_url(self.settings.smtp_url))

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def require(self, area: Area) -> Callable[..., Principal]:
        """The dependency admitting tokens whose role may use ``area``.

        One function per area, so FastAPI's per-request cache runs it once even when both the
        router and the route ask for it.
        """
        if area not in self._checks:
            self._checks[area] = self._make_check(area)
        return self._checks[area]

    def _make_check(self, area: Area) -> Callable[..., Principal]:
        engine = self.engine

        def check(credentials: Credentials) -> Principal:
            if credentials is None:
                raise _unauthorized("a bearer token is required")
            with Session(engine) as session:
                token = authenticate(session, credentials.credentials)
                if token is None:
                    raise _unauthorized("unknown or revoked token")
                principal = Principal(token.id, token.name, token.role)
                session.commit()  # last_used_at
            if not allowed(principal.role, area):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"a token with role {principal.role} may not use {area.value}",
                )
            return principal

        check.__name__ = f"require_{area.value}"
        return check
