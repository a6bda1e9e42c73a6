"""What every admin page shares: who is signed in, what their role allows, the CSRF check.

Each route depends on :meth:`Ui.viewer` (GET) or :meth:`Ui.poster` (POST) for the
:class:`~mailer.auth.Area` it belongs to (the API's role matrix). Without a session a page
redirects to the sign-in form (a ``.json`` endpoint answers 401); a role that may not use the
area gets a 403 page; a POST whose ``csrf_token`` is missing or not the session's own gets a
403 page and changes nothing. Those answers are raised as :class:`Denied` and turned into
responses by :class:`AdminRoute`, so a route body only ever runs for an allowed request.
"""

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from mailer.admin.session import FIELD, AdminUser, Sessions, csrf_ok
from mailer.admin.views import Views, redirect
from mailer.api.deps import Api
from mailer.auth import Area
from mailer.config import Settings


class Denied(Exception):
    """A request the admin refuses; carries the response to send instead."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class AdminRoute(APIRoute):
    """An APIRoute that answers :class:`Denied` with its response (raised by dependencies too)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Denied as denied:
                return denied.response

        return guarded


@dataclass(frozen=True)
class Posted:
    """A POST that passed the session, role and CSRF checks."""

    user: AdminUser
    form: FormData

    def text(self, name: str, default: str = "") -> str:
        """A text field, stripped (a file or a missing field gives ``default``)."""
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else default

    def texts(self, name: str) -> list[str]:
        return [v.strip() for v in self.form.getlist(name) if isinstance(v, str) and v.strip()]

    def file(self, name: str) -> UploadFile | None:
        value = self.form.get(name)
        return value if isinstance(value, UploadFile) and value.filename else None


async def read_form(request: Request) -> FormData:
    return await request.form()


class Ui:
    """The configuration, database, sessions, pages and services of the admin routes."""

    def __init__(self, settings: Settings, engine: Engine, sessions: Sessions, api: Api) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.api = api  # the JSON API's lazily built Service and test-send transport
        self.views = Views(settings)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- refusals --------------------------------------------------------------------------------

    def sign_in_required(self, request: Request) -> Denied:
        if request.url.path.endswith(".json"):
            return Denied(self.views.error(request, "", "sign in first", 401))
        target = request.url.path if request.method == "GET" else "/admin/"
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        return Denied(redirect("/admin/login?next=" + quote(target, safe="/")))

    def forbidden(self, request: Request) -> Denied:
        return Denied(
            self.views.error(
                request,
                "ليست لديك صلاحية",
                "دورك في الفريق لا يسمح بهذه الصفحة أو هذا الإجراء. "
                "اطلب من مدير النظام تغيير دورك إن كنت تحتاج إليها.",
                403,
                back="/admin/",
            )
        )

    def not_found(self, request: Request, what: str) -> Denied:
        return Denied(
            self.views.error(request, "غير موجود", f"لم نجد {what}.", 404, back="/admin/")
        )

    def csrf_rejected(self, request: Request) -> Denied:
        return Denied(
            self.views.error(
                request,
                "انتهت صلاحية النموذج",
                "لم نتمكن من التحقق من أن هذا الطلب صادر عن صفحة من لوحة التحرير، فلم ننفّذ "
                "شيئاً. ارجع إلى الصفحة وأعد تحميلها ثم حاول مرة أخرى.",
                403,
                back=request.headers.get("referer", "/admin/")
                if _same_site(request)
                else "/admin/",
            )
        )

    # -- checks ----------------------------------------------------------------------------------

    def require(self, request: Request, *areas: Area) -> AdminUser:
        """The signed-in user, if their role may use every one of ``areas``."""
        user = self.sessions.load(request)
        if user is None:
            raise self.sign_in_required(request)
        if not user.may(*areas):
            raise self.forbidden(request)
        return user

    def viewer(self, *areas: Area) -> Callable[[Request], AdminUser]:
        """The dependency of a page that ``areas`` govern (none: any signed-in user)."""

        def view(request: Request) -> AdminUser:
            return self.require(request, *areas)

        return view

    def poster(self, *areas: Area) -> Callable[..., Posted]:
        """The dependency of a form POST: signed in, allowed, and carrying the CSRF token."""

        def post(request: Request, form: Annotated[FormData, Depends(read_form)]) -> Posted:
            user = self.require(request, *areas)
            if not csrf_ok(user, form.get(FIELD)):
                raise self.csrf_rejected(request)
            return Posted(user, form)

        return post


def _same_site(request: Request) -> bool:
    referer = request.headers.get("referer", "")
    return referer.startswith(str(request.base_url).rstrip("/") + "/admin")
