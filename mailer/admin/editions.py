"""Editions (operators; editors see their alerts): list, live detail, controls, previews.

The detail page shows a progress bar, the rate, an ETA and the failures grouped by reason, and
stays live without a reload: ``admin.js`` polls ``/admin/editions/{id}/progress.json`` every
second until the edition reaches a final status. Pause, resume, cancel and "resend failed"
are forms (CSRF-checked) that call :class:`mailer.service.Service` and
:func:`mailer.operations.resend_failed`, and are recorded in the audit log.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import audit, editions, operations
from mailer.addresses import InvalidAddress
from mailer.admin import labels
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.preview import edition_preview
from mailer.admin.session import AdminUser
from mailer.admin.views import EMAIL_HEADERS, HEADERS, redirect
from mailer.auth import Area
from mailer.models import Cadence, Delivery, DeliveryStatus, Edition, EditionKind, Topic, utcnow

PAGE = 30
PROBLEMS = (DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.DEFERRED)


def may_watch(user: AdminUser, edition: Edition) -> bool:
    """Operators watch every edition; editors the alerts they can trigger."""
    return user.may(Area.EDITIONS) or (edition.kind == EditionKind.ALERT and user.may(Area.ALERTS))


def snapshot(session: Session, edition: Edition, now: datetime) -> dict[str, Any]:
    """Live progress of one edition, as the page and its JSON endpoint show it."""
    state = editions.progress(session, edition)
    counts = {status: n for status, n in state.counts.items() if n}
    elapsed = 0.0
    if edition.started_at is not None:
        elapsed = ((edition.finished_at or now) - edition.started_at).total_seconds()
    # The average since the start; the page refines it from its own polls (the recent rate).
    rate = state.done / elapsed if elapsed > 0 else 0.0
    remaining = state.total - state.done
    eta = remaining / rate if rate and remaining and edition.status == "sending" else None
    return {
        "id": edition.id,
        "status": edition.status,
        "status_label": labels.EDITION_STATUS.get(edition.status, edition.status),
        "reason": edition.status_reason,
        "final": edition.status in labels.FINAL,
        "total": state.total,
        "done": state.done,
        # Floored, so 100 means every reader has an outcome.
        "percent": int(state.fraction * 100),
        "counts": counts,
        "rate": round(rate, 1),
        "eta_seconds": round(eta) if eta is not None else None,
    }


def failures(session: Session, edition_id: int) -> list[tuple[str, int | None, str, int]]:
    """(status, SMTP code, server's answer, readers) for the edition's problems, most first."""
    count = func.count().label("n")
    rows = session.execute(
        select(Delivery.status, Delivery.last_code, Delivery.last_response, count)
        .where(Delivery.edition_id == edition_id, Delivery.status.in_(PROBLEMS))
        .group_by(Delivery.status, Delivery.last_code, Delivery.last_response)
        .order_by(count.desc())
        .limit(20)
    ).all()
    return [(str(s), code, text or "", int(n)) for s, code, text, n in rows]


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Anyone = Annotated[AdminUser, Depends(ui.viewer())]
    Operator = Annotated[AdminUser, Depends(ui.viewer(Area.EDITIONS))]
    OperatorPost = Annotated[Posted, Depends(ui.poster(Area.EDITIONS))]

    def watched(request: Request, session: Session, edition_id: int, user: AdminUser) -> Edition:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise ui.not_found(request, "هذا الإرسال")
        if not may_watch(user, edition):
            raise ui.forbidden(request)
        return edition

    @router.get("/editions", include_in_schema=False)
    def editions_page(request: Request, user: Operator) -> Response:
        status = request.query_params.get("status", "")
        kind = request.query_params.get("kind", "")
        before = request.query_params.get("before", "")
        now = utcnow()
        with ui.session() as session:
            query = select(Edition).order_by(Edition.id.desc()).limit(PAGE)
            if status in labels.EDITION_STATUS:
                query = query.where(Edition.status == status)
            if kind in labels.KIND:
                query = query.where(Edition.kind == kind)
            if before.isdigit():
                query = query.where(Edition.id < int(before))
            found = list(session.scalars(query))
            rows = [(e, snapshot(session, e, now)) for e in found]
            topics = list(session.scalars(select(Topic).order_by(Topic.position, Topic.id)))
            context = {
                "title": "الإرسالات",
                "rows": rows,
                "status": status,
                "kind": kind,
                "topics": topics,
                "more": found[-1].id if len(found) == PAGE else None,
            }
            return ui.views.render(request, "editions", context)

    @router.get("/editions/{edition_id}", include_in_schema=False)
    def edition_page(request: Request, edition_id: int, user: Anyone) -> Response:
        with ui.session() as session:
            edition = watched(request, session, edition_id, user)
            context = {
                "title": edition.subject or f"إرسال رقم {edition.id}",
                "edition": edition,
                "live": snapshot(session, edition, utcnow()),
                "failures": failures(session, edition_id),
                "can_control": user.may(Area.EDITIONS),
            }
            return ui.views.render(request, "edition", context)

    @router.get("/editions/{edition_id}/progress.json", include_in_schema=False)
    def progress_json(request: Request, edition_id: int, user: Anyone) -> Response:
        with ui.session() as session:
            edition = watched(request, session, edition_id, user)
            return JSONResponse(snapshot(session, edition, utcnow()), headers=HEADERS)

    def control(request: Request, edition_id: int, posted: Posted, action: str) -> Response:
        with ui.session() as session:
            watched(request, session, edition_id, posted.user)
        details: dict[str, Any] = {}
        try:
            if action == "pause":
                details["reason"] = posted.text("reason")[:500] or "أوقفه المشغّل"
                ui.api.service.pause(edition_id, details["reason"])
            elif action == "resume":
                details["batches"] = ui.api.service.resume(edition_id)
            elif action == "cancel":
                ui.api.service.cancel(edition_id)
            else:  # resend failed: audited by operations itself
                count = operations.resend_failed(
                    ui.engine,
                    ui.settings,
                    ui.api.service.dispatcher,
                    edition_id,
                    posted.user.actor,
                )
                notice = "resent" if count else "nothing_to_resend"
                return redirect(f"/admin/editions/{edition_id}", notice)
        except editions.EditionError as exc:
            return ui.views.error(
                request,
                "تعذّر تنفيذ الطلب",
                f"حالة الإرسال لا تسمح بذلك: {exc}",
                409,
                back=f"/admin/editions/{edition_id}",
            )
        with ui.engine.begin() as conn:
            target = f"edition:{edition_id}"
            audit.record(conn, posted.user.actor, f"edition.{action}", target, details)
        notices = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
        return redirect(f"/admin/editions/{edition_id}", notices[action])

    @router.post("/editions/{edition_id}/pause", include_in_schema=False)
    def pause(request: Request, edition_id: int, posted: OperatorPost) -> Response:
        return control(request, edition_id, posted, "pause")

    @router.post("/editions/{edition_id}/resume", include_in_schema=False)
    def resume(request: Request, edition_id: int, posted: OperatorPost) -> Response:
        return control(request, edition_id, posted, "resume")

    @router.post("/editions/{edition_id}/cancel", include_in_schema=False)
    def cancel(request: Request, edition_id: int, posted: OperatorPost) -> Response:
        return control(request, edition_id, posted, "cancel")

    @router.post("/editions/{edition_id}/resend-failed", include_in_schema=False)
    def resend(request: Request, edition_id: int, posted: OperatorPost) -> Response:
        return control(request, edition_id, posted, "resend")

    @router.post("/editions/digest", include_in_schema=False)
    def send_digest(request: Request, posted: OperatorPost) -> Response:
        topic, cadence = posted.text("topic"), posted.text("cadence")
        if cadence not in (Cadence.DAILY, Cadence.WEEKLY):
            cadence = Cadence.DAILY
        try:
            started = ui.api.service.send_digest(topic, cadence)
        except editions.EditionError as exc:
            return ui.views.error(
                request, "تعذّر إرسال النشرة", str(exc), 422, back="/admin/editions"
            )
        with ui.engine.begin() as conn:
            details = {"topic": topic, "cadence": cadence}
            target = f"edition:{started.edition_id}"
            audit.record(conn, posted.user.actor, "digest.send", target, details)
        notice = "digest_skipped" if started.status == "skipped" else "digest_started"
        return redirect(f"/admin/editions/{started.edition_id}", notice)

    def shown(request: Request, edition_id: int, user: AdminUser) -> Any:
        reader = request.query_params.get("reader", "").strip() or None
        with ui.session() as session:
            edition = watched(request, session, edition_id, user)
        try:
            return edition, edition_preview(ui.engine, ui.settings, edition, reader)
        except (operations.NotFound, InvalidAddress) as exc:
            raise ui.not_found(request, "قارئاً بهذا العنوان في هذا الإرسال") from exc

    @router.get("/editions/{edition_id}/preview", include_in_schema=False)
    def preview_page(request: Request, edition_id: int, user: Anyone) -> Response:
        edition, email = shown(request, edition_id, user)
        context = {"title": "معاينة الرسالة", "edition": edition, "email": email}
        return ui.views.render(request, "preview", context)

    @router.get("/editions/{edition_id}/email.html", include_in_schema=False)
    def email_html(request: Request, edition_id: int, user: Anyone) -> Response:
        _, email = shown(request, edition_id, user)
        return HTMLResponse(email.html, headers=EMAIL_HEADERS)

    return router
