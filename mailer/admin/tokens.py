"""API tokens (admins): list, create (the secret is shown once), revoke — via :mod:`mailer.auth`."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from mailer import audit, auth
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.session import AdminUser
from mailer.admin.views import redirect
from mailer.auth import Area


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Admin = Annotated[AdminUser, Depends(ui.viewer(Area.TOKENS))]
    AdminPost = Annotated[Posted, Depends(ui.poster(Area.TOKENS))]

    def page(request: Request, secret: str = "", error: str = "", status: int = 200) -> Response:
        with ui.session() as session:
            tokens = auth.list_tokens(session)
        context = {"title": "مفاتيح الواجهة البرمجية", "tokens": tokens, "secret": secret}
        context["error"] = error
        return ui.views.render(request, "tokens", context, status=status)

    @router.get("/tokens", include_in_schema=False)
    def tokens_page(request: Request, user: Admin) -> Response:
        return page(request)

    @router.post("/tokens", include_in_schema=False)
    def create(request: Request, posted: AdminPost) -> Response:
        role, name = posted.text("role"), posted.text("name")
        try:
            with ui.session() as session:
                token_id, secret = auth.create_token(session, role, name)
                details = {"role": role, "name": name}
                target = f"token:{token_id}"
                audit.record(session, posted.user.actor, "token.create", target, details)
                session.commit()
        except ValueError as exc:  # the page reads once this session is closed
            return page(request, error=f"تعذّر إنشاء المفتاح: {exc}", status=422)
        # Answered directly, not redirected: the secret must not travel in a URL or be shown
        # again on reload (the page is never cached).
        return page(request, secret=secret, status=201)

    @router.post("/tokens/{token_id}/revoke", include_in_schema=False)
    def revoke(request: Request, token_id: int, posted: AdminPost) -> Response:
        with ui.session() as session:
            if not auth.revoke_token(session, token_id):
                raise ui.not_found(request, "مفتاحاً سارياً بهذا الرقم")
            audit.record(session, posted.user.actor, "token.revoke", f"token:{token_id}")
            session.commit()
        return redirect("/admin/tokens", "token_revoked")

    return router
