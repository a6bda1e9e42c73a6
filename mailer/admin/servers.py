"""SMTP servers (admins): the servers editions go through, their health, add/change/remove.

Health is what the senders recorded (:func:`mailer.servers.record_health`): healthy or not,
out of rotation until when, and the last error. URLs are checked the way the sender parses
them (:class:`mailer.transport.SmtpConfig`) and shown with the password masked.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mailer import audit
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.session import AdminUser
from mailer.admin.views import redirect
from mailer.api.smtp import redact
from mailer.auth import Area
from mailer.models import SmtpServer, utcnow
from mailer.transport import SmtpConfig


def _number(text: str, default: float | None, low: float, high: float) -> float | None:
    if not text:
        return default
    value = float(text)  # ValueError for "abc"
    if not low <= value <= high:
        raise ValueError(f"{text} is not between {low:g} and {high:g}")
    return value


def values(posted: Posted, *, partial: bool) -> dict[str, Any]:
    """The form's fields, checked (ValueError says which is wrong)."""
    found: dict[str, Any] = {}
    name, url = posted.text("name"), posted.text("url")
    if name or not partial:
        if not name or len(name) > 100:
            raise ValueError("a name has 1 to 100 characters")
        found["name"] = name
    if url or not partial:
        SmtpConfig.from_url(url)  # its messages never echo the URL (it may hold a password)
        found["url"] = url
    weight = _number(posted.text("weight"), None if partial else 1, 0, 1000)
    if weight is not None:
        found["weight"] = int(weight)
    connections = _number(posted.text("max_connections"), None if partial else 4, 1, 1000)
    if connections is not None:
        found["max_connections"] = int(connections)
    rate = _number(posted.text("rate_per_second"), None, 0.01, 1e6)
    if rate is not None or not partial:
        found["rate_per_second"] = rate
    found["enabled"] = posted.text("enabled") == "on"
    return found


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Admin = Annotated[AdminUser, Depends(ui.viewer(Area.SMTP))]
    AdminPost = Annotated[Posted, Depends(ui.poster(Area.SMTP))]

    def page(request: Request, error: str = "", status: int = 200) -> Response:
        with ui.session() as session:
            servers = list(session.scalars(select(SmtpServer).order_by(SmtpServer.id)))
        context = {
            "title": "خوادم البريد",
            "servers": servers,
            "redact": redact,
            "now": utcnow(),
            "default_url": redact(ui.settings.smtp_url),
            "error": error,
        }
        return ui.views.render(request, "smtp", context, status=status)

    @router.get("/smtp", include_in_schema=False)
    def servers_page(request: Request, user: Admin) -> Response:
        return page(request)

    @router.post("/smtp", include_in_schema=False)
    def add(request: Request, posted: AdminPost) -> Response:
        try:
            fields = values(posted, partial=False)
        except ValueError as exc:
            return page(request, f"تعذّر إضافة الخادم: {exc}", 422)
        try:
            with ui.session() as session:
                server = SmtpServer(**fields)
                session.add(server)
                session.flush()
                details = {"name": server.name, "url": redact(server.url)}
                audit.record(session, posted.user.actor, "smtp.add", f"smtp:{server.id}", details)
                session.commit()
        except IntegrityError:  # rendered once the session is closed (SQLite's single writer)
            return page(request, "يوجد خادم بهذا الاسم من قبل.", 409)
        return redirect("/admin/smtp", "server_added")

    @router.post("/smtp/{server_id}", include_in_schema=False)
    def save(request: Request, server_id: int, posted: AdminPost) -> Response:
        try:
            fields = values(posted, partial=True)
        except ValueError as exc:
            return page(request, f"تعذّر حفظ الخادم: {exc}", 422)
        try:
            with ui.session() as session:
                server = session.get(SmtpServer, server_id)
                if server is None:
                    raise ui.not_found(request, "هذا الخادم")
                for key, value in fields.items():
                    setattr(server, key, value)
                session.flush()
                shown = fields | ({"url": redact(fields["url"])} if "url" in fields else {})
                target = f"smtp:{server_id}"
                audit.record(session, posted.user.actor, "smtp.update", target, shown)
                session.commit()
        except IntegrityError:
            return page(request, "يوجد خادم بهذا الاسم من قبل.", 409)
        return redirect("/admin/smtp", "server_saved")

    @router.post("/smtp/{server_id}/remove", include_in_schema=False)
    def remove(request: Request, server_id: int, posted: AdminPost) -> Response:
        with ui.session() as session:
            server = session.get(SmtpServer, server_id)
            if server is None:
                raise ui.not_found(request, "هذا الخادم")
            session.delete(server)
            audit.record(session, posted.user.actor, "smtp.remove", f"smtp:{server_id}")
            session.commit()
        return redirect("/admin/smtp", "server_removed")

    return router
