"""``/smtp-servers`` (admins): the SMTP servers editions are sent through.

URLs are checked the way the sender parses them; answers never show the password.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailer import audit
from mailer.api.deps import Api, conflict, not_found, unprocessable
from mailer.auth import Area, Principal
from mailer.models import SmtpServer
from mailer.transport import SmtpConfig


class SmtpServerIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    url: str = Field(description="smtp[s]://[user:pass@]host[:port][?starttls=true&…]")
    weight: int = Field(1, ge=0, le=1000)
    max_connections: int = Field(4, ge=1, le=1000)
    rate_per_second: float | None = Field(None, gt=0)
    enabled: bool = True


class SmtpServerPatch(BaseModel):
    """Only the fields given are changed."""

    name: str | None = Field(None, min_length=1, max_length=100)
    url: str | None = None
    weight: int | None = Field(None, ge=0, le=1000)
    max_connections: int | None = Field(None, ge=1, le=1000)
    rate_per_second: float | None = Field(None, gt=0)
    enabled: bool | None = None


class SmtpServerOut(BaseModel):
    id: int
    name: str
    url: str = Field(description="With the password replaced by ***")
    weight: int
    max_connections: int
    rate_per_second: float | None
    enabled: bool
    healthy: bool
    last_error: str | None
    down_until: datetime | None


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def server_out(server: SmtpServer) -> SmtpServerOut:
    return SmtpServerOut(
        id=server.id,
        name=server.name,
        url=redact(server.url),
        weight=server.weight,
        max_connections=server.max_connections,
        rate_per_second=server.rate_per_second,
        enabled=server.enabled,
        healthy=server.healthy,
        last_error=server.last_error,
        down_until=server.down_until,
    )


def checked_url(url: str) -> str:
    try:
        SmtpConfig.from_url(url)
    except ValueError as exc:  # its messages never echo the URL (it may hold a password)
        raise unprocessable(str(exc)) from exc
    return url.strip()


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["smtp"], dependencies=[Depends(api.require(Area.SMTP))])
    Admin = Annotated[Principal, Depends(api.require(Area.SMTP))]

    @router.get("/smtp-servers", summary="Every SMTP server")
    def list_servers() -> list[SmtpServerOut]:
        with api.session() as session:
            return [server_out(s) for s in session.scalars(select(SmtpServer).order_by("id"))]

    @router.post("/smtp-servers", status_code=status.HTTP_201_CREATED, summary="Add a server")
    def add(body: SmtpServerIn, caller: Admin) -> SmtpServerOut:
        server = SmtpServer(**(body.model_dump() | {"url": checked_url(body.url)}))
        with api.session() as session:
            session.add(server)
            try:
                session.flush()
            except IntegrityError as exc:
                raise conflict(f"an SMTP server is already named {body.name!r}") from exc
            details = {"name": server.name, "url": redact(server.url)}
            audit.record(session, caller.actor, "smtp.add", f"smtp:{server.id}", details)
            session.commit()
            return server_out(server)

    @router.patch("/smtp-servers/{server_id}", summary="Change some fields of a server")
    def update(server_id: int, body: SmtpServerPatch, caller: Admin) -> SmtpServerOut:
        changes = body.model_dump(exclude_unset=True)
        if "url" in changes:
            changes["url"] = checked_url(changes["url"] or "")
        with api.session() as session:
            server = session.get(SmtpServer, server_id)
            if server is None:
                raise not_found(f"SMTP server {server_id}")
            for key, value in changes.items():
                setattr(server, key, value)
            try:
                session.flush()
            except IntegrityError as exc:
                raise conflict(f"an SMTP server is already named {body.name!r}") from exc
            shown = changes | ({"url": redact(changes["url"])} if "url" in changes else {})
            audit.record(session, caller.actor, "smtp.update", f"smtp:{server_id}", shown)
            session.commit()
            return server_out(server)

    @router.delete(
        "/smtp-servers/{server_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove a server",
        response_class=Response,
    )
    def remove(server_id: int, caller: Admin) -> None:
        with api.session() as session:
            server = session.get(SmtpServer, server_id)
            if server is None:
                raise not_found(f"SMTP server {server_id}")
            session.delete(server)
            audit.record(session, caller.actor, "smtp.remove", f"smtp:{server_id}")
            session.commit()

    return router
