"""``/admin/login`` and ``/admin/logout``.

The sign-in form is protected against login CSRF with the reader pages' signed double-submit
pair (:mod:`mailer.csrf`), since no session exists yet. Attempts are rate-limited per client
address and username, so a password cannot be guessed at speed. A wrong username and a wrong
password get the same answer.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from mailer import audit, users
from mailer.admin.core import AdminRoute, Posted, Ui, read_form
from mailer.admin.views import redirect
from mailer.csrf import COOKIE as LOGIN_COOKIE
from mailer.csrf import FIELD, Csrf
from mailer.ratelimit import Limiter
from mailer.web.pages import client_ip

#: Attempts per client address and username (successful ones count too).
LOGIN_LIMIT = "10/15minutes"


def safe_next(target: str | None) -> str:
    """Only a path inside the admin (never another site via ``//host`` or a scheme)."""
    if target and target.startswith("/admin") and "//" not in target and "\\" not in target:
        return target
    return "/admin/"


def routes(ui: Ui, csrf: Csrf, limiter: Limiter) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)

    def form(
        request: Request, *, error: str = "", username: str = "", status: int = 200
    ) -> Response:
        seed, field = csrf.issue(request.cookies.get(LOGIN_COOKIE))
        context = {
            "title": "تسجيل الدخول",
            "error": error,
            "username": username,
            "next": safe_next(request.query_params.get("next")),
        }
        response = ui.views.render(request, "login", context, status=status, csrf_token=field)
        response.set_cookie(
            LOGIN_COOKIE,
            seed,
            httponly=True,
            samesite="lax",
            secure=ui.sessions.secure(request),
            path="/",
        )
        return response

    @router.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        if ui.sessions.load(request) is not None:
            return redirect(safe_next(request.query_params.get("next")))
        return form(request)

    @router.post("/login", include_in_schema=False)
    def login(request: Request, data: Annotated[FormData, Depends(read_form)]) -> Response:
        field = data.get(FIELD)
        if not csrf.verify(
            request.cookies.get(LOGIN_COOKIE), field if isinstance(field, str) else None
        ):
            raise ui.csrf_rejected(request)
        username = str(data.get("username") or "").strip()
        password = str(data.get("password") or "")
        target = safe_next(str(data.get("next") or ""))
        key = f"admin-login:{client_ip(request)}:{users.normalise_username(username)}"
        if not limiter.hit(key, LOGIN_LIMIT):
            return form(
                request,
                error="محاولات دخول كثيرة. انتظر ربع ساعة ثم حاول مرة أخرى.",
                username=username,
                status=429,
            )
        with Session(ui.engine) as session:
            user = users.authenticate(session, username, password)
            if user is None:
                session.rollback()
                return form(
                    request,
                    error="اسم المستخدم أو كلمة المرور غير صحيحة.",
                    username=username,
                    status=401,
                )
            audit.record(
                session, f"user:{user.id}:{user.username}", "user.login", f"user:{user.id}"
            )
            session.commit()
            response = redirect(target)
            ui.sessions.start(request, response, user)
        return response

    @router.post("/logout", include_in_schema=False)
    def logout(request: Request, posted: Annotated[Posted, Depends(ui.poster())]) -> Response:
        response = redirect("/admin/login", "signed_out")
        ui.sessions.end(request, response)
        return response

    return router
