"""Suppressions (operators): addresses never mailed again — search, add, lift.

All through :mod:`mailer.suppress`, the module the CLI and the API use. An entry whose address
was erased (a reader asked to be forgotten) is listed without it and found by the whole
address, through its hash.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import delete

from mailer import audit, suppress
from mailer.addresses import InvalidAddress
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.session import AdminUser
from mailer.admin.views import redirect
from mailer.auth import Area
from mailer.models import Suppression

PAGE = 50


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Operator = Annotated[AdminUser, Depends(ui.viewer(Area.SUPPRESSIONS))]
    OperatorPost = Annotated[Posted, Depends(ui.poster(Area.SUPPRESSIONS))]

    def page(request: Request, error: str = "", form: dict[str, str] | None = None) -> Response:
        q = request.query_params.get("q", "").strip()
        offset_text = request.query_params.get("offset", "0")
        offset = int(offset_text) if offset_text.isdigit() else 0
        with ui.engine.connect() as conn:
            rows = suppress.list_suppressions(conn, PAGE, offset, q, settings=ui.settings)
            total = suppress.count_suppressions(conn, q, settings=ui.settings)
        context = {
            "title": "قائمة الحظر",
            "rows": rows,
            "total": total,
            "q": q,
            "offset": offset,
            "more": offset + PAGE if offset + PAGE < total else None,
            "form": form or {},
            "error": error,
        }
        return ui.views.render(request, "suppressions", context, status=422 if error else 200)

    @router.get("/suppressions", include_in_schema=False)
    def suppressions_page(request: Request, user: Operator) -> Response:
        return page(request)

    @router.post("/suppressions", include_in_schema=False)
    def add(request: Request, posted: OperatorPost) -> Response:
        email, reason = posted.text("email"), posted.text("reason") or "manual"
        source = posted.text("source") or f"admin:{posted.user.username}"
        try:
            with ui.engine.begin() as conn:
                row, created = suppress.add_suppression(
                    conn, email, ui.settings, reason=reason, source=source[:200]
                )
                if created:
                    details = {"reason": row.reason, "source": source}
                    target = f"suppression:{row.id}"
                    audit.record(conn, posted.user.actor, "suppression.add", target, details)
        except (InvalidAddress, ValueError) as exc:  # the page reads once the lock is released
            form = {"email": email, "reason": reason, "source": posted.text("source")}
            return page(request, error=f"تعذّر الحظر: {exc}", form=form)
        return redirect("/admin/suppressions", "suppressed" if created else "already_suppressed")

    @router.post("/suppressions/{suppression_id}/remove", include_in_schema=False)
    def remove(request: Request, suppression_id: int, posted: OperatorPost) -> Response:
        with ui.engine.begin() as conn:
            # By id, as the API does: an erased entry has no address left to name it by.
            gone = conn.execute(delete(Suppression).where(Suppression.id == suppression_id))
            if not gone.rowcount:
                raise ui.not_found(request, "هذا العنوان في قائمة الحظر")
            target = f"suppression:{suppression_id}"
            audit.record(conn, posted.user.actor, "suppression.remove", target)
        return redirect("/admin/suppressions", "unsuppressed")

    return router
