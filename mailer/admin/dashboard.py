"""``/admin/`` — the dashboard: readers by status and their growth, the latest editions with
their counts, and the editions sending right now (live, polled like the edition page).

What a role sees follows the matrix: reader figures need the stats area (operators, admins);
editors see only alerts among the editions.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from mailer.admin import charts
from mailer.admin.core import AdminRoute, Ui
from mailer.admin.editions import snapshot
from mailer.admin.session import AdminUser
from mailer.auth import Area
from mailer.models import Edition, EditionKind, EditionStatus, Subscriber, SubscriberStatus, utcnow

LATEST = 10


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Anyone = Annotated[AdminUser, Depends(ui.viewer())]

    @router.get("/", include_in_schema=False)
    def dashboard(request: Request, user: Anyone) -> Response:
        now = utcnow()
        context: dict[str, object] = {"title": "الرئيسية", "readers": None, "chart": None}
        if user.may(Area.STATS):
            with ui.engine.connect() as conn:
                by_status = dict(
                    conn.execute(
                        select(Subscriber.status, func.count()).group_by(Subscriber.status)
                    ).all()
                )
                series = charts.growth(conn, now)
            readers = [(s.value, int(by_status.get(s.value, 0))) for s in SubscriberStatus]
            context["readers"] = readers
            context["readers_total"] = sum(n for _, n in readers)
            context["chart"] = charts.layout(series)
        watch_all = user.may(Area.EDITIONS)
        if watch_all or user.may(Area.ALERTS):
            with ui.session() as session:
                query = select(Edition).order_by(Edition.id.desc())
                if not watch_all:
                    query = query.where(Edition.kind == EditionKind.ALERT)
                running_query = query.where(
                    Edition.status.in_([EditionStatus.SENDING, EditionStatus.PAUSED])
                )
                running = list(session.scalars(running_query.limit(LATEST)))
                latest = list(session.scalars(query.limit(LATEST)))
                context["running"] = [(e, snapshot(session, e, now)) for e in running]
                context["latest"] = [(e, snapshot(session, e, now)) for e in latest]
        return ui.views.render(request, "dashboard", context)

    return router
