"""Readers (operators): search, one reader's record, unsubscribe them, suppress their address.

A reader's page shows their subscriptions, their latest deliveries and their consent record
(when, from which address and browser, through which form), which is what a newsroom needs
to answer "why did I get this?". Unsubscribing here is the reader pages' own
:func:`mailer.readers.unsubscribe` (everything); suppressing is :mod:`mailer.suppress`.
"""

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from mailer import audit, readers, suppress
from mailer.addresses import InvalidAddress
from mailer.admin import labels
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.session import AdminUser
from mailer.admin.views import redirect
from mailer.auth import Area
from mailer.models import Delivery, Edition, Subscriber, Subscription

PAGE = 50
DELIVERIES = 50


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Operator = Annotated[AdminUser, Depends(ui.viewer(Area.SUBSCRIBERS))]
    OperatorPost = Annotated[Posted, Depends(ui.poster(Area.SUBSCRIBERS))]
    SuppressPost = Annotated[Posted, Depends(ui.poster(Area.SUBSCRIBERS, Area.SUPPRESSIONS))]

    @router.get("/readers", include_in_schema=False)
    def readers_page(request: Request, user: Operator) -> Response:
        q = request.query_params.get("q", "").strip()
        status = request.query_params.get("status", "")
        after = request.query_params.get("after", "")
        query = select(Subscriber).order_by(Subscriber.id).limit(PAGE)
        if status in labels.READER_STATUS:
            query = query.where(Subscriber.status == status)
        if after.isdigit():
            query = query.where(Subscriber.id > int(after))
        if q:
            text = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            match = or_(
                Subscriber.email.ilike(f"%{text}%", escape="\\"),
                Subscriber.name.ilike(f"%{text}%", escape="\\"),
            )
            # A whole address also finds itself by its indexed hash, whatever its case.
            with contextlib.suppress(InvalidAddress):
                match = or_(match, Subscriber.email_hash == suppress.hash_for(q, ui.settings))
            query = query.where(match)
        with ui.session() as session:
            found = list(session.scalars(query))
        context = {
            "title": "القرّاء",
            "readers": found,
            "q": q,
            "status": status,
            "more": found[-1].id if len(found) == PAGE else None,
        }
        return ui.views.render(request, "readers", context)

    @router.get("/readers/{reader_id}", include_in_schema=False)
    def reader_page(request: Request, reader_id: int, user: Operator) -> Response:
        with ui.session() as session:
            reader = session.get(
                Subscriber,
                reader_id,
                options=[selectinload(Subscriber.subscriptions).selectinload(Subscription.topic)],
            )
            if reader is None:
                raise ui.not_found(request, "هذا القارئ")
            deliveries = session.execute(
                select(Delivery, Edition)
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(Delivery.subscriber_id == reader_id)
                # Newest editions first, probing the (edition, reader) index for each: there is
                # no index on the reader alone (readers.deliveries_of).
                .order_by(Edition.id.desc())
                .limit(DELIVERIES)
            ).all()
            suppressed = None
            if reader.email:
                # The session's own connection: a second one would wait for this one's lock
                # (SQLite transactions begin IMMEDIATE).
                suppressed = suppress.get_suppression(
                    session.connection(), reader.email, ui.settings
                )
            context = {
                "title": reader.name or reader.email or f"قارئ رقم {reader.id}",
                "reader": reader,
                "deliveries": deliveries,
                "suppressed": suppressed,
                "can_suppress": user.may(Area.SUPPRESSIONS),
            }
            return ui.views.render(request, "reader", context)

    @router.post("/readers/{reader_id}/unsubscribe", include_in_schema=False)
    def unsubscribe(request: Request, reader_id: int, posted: OperatorPost) -> Response:
        scope = readers.Scope(reader_id, 0, readers.EVERYTHING)
        if not readers.unsubscribe(ui.engine, scope, everything=True):
            raise ui.not_found(request, "هذا القارئ")
        with ui.engine.begin() as conn:
            audit.record(
                conn, posted.user.actor, "subscriber.unsubscribe", f"subscriber:{reader_id}"
            )
        return redirect(f"/admin/readers/{reader_id}", "unsubscribed")

    @router.post("/readers/{reader_id}/suppress", include_in_schema=False)
    def suppress_reader(request: Request, reader_id: int, posted: SuppressPost) -> Response:
        with ui.session() as session:
            reader = session.get(Subscriber, reader_id)
            if reader is None or reader.email is None:
                raise ui.not_found(request, "عنوان هذا القارئ")
            address = reader.email
        reason = posted.text("reason") or "manual"
        with ui.engine.begin() as conn:
            try:
                row, created = suppress.add_suppression(
                    conn,
                    address,
                    ui.settings,
                    reason=reason,
                    source=f"admin:{posted.user.username}",
                )
            except (InvalidAddress, ValueError) as exc:
                return ui.views.error(
                    request, "تعذّر الحظر", str(exc), 422, back=f"/admin/readers/{reader_id}"
                )
            if created:
                details = {"reason": row.reason, "subscriber": reader_id}
                audit.record(
                    conn, posted.user.actor, "suppression.add", f"suppression:{row.id}", details
                )
        return redirect(
            f"/admin/readers/{reader_id}", "suppressed" if created else "already_suppressed"
        )

    return router
