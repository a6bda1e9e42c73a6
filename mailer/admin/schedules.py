"""Schedules (operators): create, edit, pause, resume, remove; the next five runs are shown
in each schedule's own time zone.

Validation is :func:`mailer.schedules.add_schedule`'s, also for an edit: the new values are
tried as a schedule inside a savepoint that is then rolled back, and only the normalised
values are copied onto the existing row, so the CLI, the API and this page accept exactly the
same input.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from mailer import audit, schedules
from mailer.admin import labels
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.session import AdminUser
from mailer.admin.stories import topics
from mailer.admin.views import redirect
from mailer.auth import Area
from mailer.models import Schedule, utcnow
from mailer.web.pages import TIME_ZONES

RUNS = 5
_COPIED = ("topic_id", "cadence", "at_time", "weekdays", "cron", "timezone")


def fields(posted: Posted) -> dict[str, Any]:
    """The form's values as :func:`mailer.schedules.add_schedule` takes them."""
    by_cron = posted.text("mode") == "cron"
    days = ",".join(d for d in labels.WEEKDAYS if d in posted.texts("weekdays"))
    return {
        "topic": posted.text("topic"),
        "cadence": posted.text("cadence"),
        "at": None if by_cron else posted.text("at"),
        "cron": posted.text("cron") if by_cron else None,
        "weekdays": None if by_cron else (days or None),
        "timezone": posted.text("timezone") or "Africa/Cairo",
    }


def edit(session: Session, schedule: Schedule, values: dict[str, Any]) -> None:
    """Change ``schedule`` to ``values`` (ValueError as ``add_schedule`` raises it)."""
    trial = session.begin_nested()
    try:
        probe = schedules.add_schedule(session, **values)
        normalised = {name: getattr(probe, name) for name in _COPIED}
    finally:
        trial.rollback()
    for name, value in normalised.items():
        setattr(schedule, name, value)
    if schedule.enabled:
        # A slot of the new rule that already passed must not fire as a catch-up right now.
        latest = schedules.previous_run(schedule, utcnow())
        schedule.last_due_at = max(latest, schedule.last_due_at or latest)
    session.flush()


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Operator = Annotated[AdminUser, Depends(ui.viewer(Area.SCHEDULES))]
    OperatorPost = Annotated[Posted, Depends(ui.poster(Area.SCHEDULES))]

    def page(
        request: Request,
        editing: int | None = None,
        form: dict[str, Any] | None = None,
        error: str = "",
    ) -> Response:
        now = utcnow()
        with ui.session() as session:
            found = schedules.list_schedules(session)
            rows = [(s, schedules.next_runs(s, now, RUNS) if s.enabled else []) for s in found]
            current = next((s for s in found if s.id == editing), None)
            if editing is not None and current is None:
                raise ui.not_found(request, "هذا الموعد")
            context = {
                "title": "مواعيد النشرات",
                "rows": rows,
                "topics": topics(session),
                "zones": TIME_ZONES,
                "editing": current,
                "form": form or {},
                "error": error,
            }
            status = 422 if error else 200
            return ui.views.render(request, "schedules", context, status=status)

    def existing(request: Request, session: Session, schedule_id: int) -> Schedule:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None:
            raise ui.not_found(request, "هذا الموعد")
        return schedule

    @router.get("/schedules", include_in_schema=False)
    def schedules_page(request: Request, user: Operator) -> Response:
        return page(request)

    @router.get("/schedules/{schedule_id}", include_in_schema=False)
    def schedule_page(request: Request, schedule_id: int, user: Operator) -> Response:
        return page(request, editing=schedule_id)

    @router.post("/schedules", include_in_schema=False)
    def add(request: Request, posted: OperatorPost) -> Response:
        values = fields(posted)
        # Pages are rendered after the transaction: on SQLite a second connection would wait
        # for this one's lock.
        error = ""
        with ui.session() as session:
            try:
                schedule = schedules.add_schedule(session, **values)
                target = f"schedule:{schedule.id}"
                audit.record(session, posted.user.actor, "schedule.add", target, values)
                session.commit()
            except ValueError as exc:
                error = f"تعذّر إضافة الموعد: {exc}"
        if error:
            return page(request, form=values, error=error)
        return redirect("/admin/schedules", "schedule_added")

    @router.post("/schedules/{schedule_id}", include_in_schema=False)
    def save(request: Request, schedule_id: int, posted: OperatorPost) -> Response:
        values = fields(posted)
        error = ""
        with ui.session() as session:
            schedule = existing(request, session, schedule_id)
            try:
                edit(session, schedule, values)
                target = f"schedule:{schedule_id}"
                audit.record(session, posted.user.actor, "schedule.update", target, values)
                session.commit()
            except ValueError as exc:
                error = f"تعذّر حفظ الموعد: {exc}"
        if error:
            return page(request, editing=schedule_id, form=values, error=error)
        return redirect("/admin/schedules", "schedule_saved")

    def switch(request: Request, schedule_id: int, posted: Posted, enabled: bool) -> Response:
        with ui.session() as session:
            existing(request, session, schedule_id)
            schedules.set_enabled(session, schedule_id, enabled)
            action = "schedule.resume" if enabled else "schedule.pause"
            audit.record(session, posted.user.actor, action, f"schedule:{schedule_id}")
            session.commit()
        return redirect("/admin/schedules", "schedule_resumed" if enabled else "schedule_paused")

    @router.post("/schedules/{schedule_id}/pause", include_in_schema=False)
    def pause(request: Request, schedule_id: int, posted: OperatorPost) -> Response:
        return switch(request, schedule_id, posted, False)

    @router.post("/schedules/{schedule_id}/resume", include_in_schema=False)
    def resume(request: Request, schedule_id: int, posted: OperatorPost) -> Response:
        return switch(request, schedule_id, posted, True)

    @router.post("/schedules/{schedule_id}/remove", include_in_schema=False)
    def remove(request: Request, schedule_id: int, posted: OperatorPost) -> Response:
        with ui.session() as session:
            existing(request, session, schedule_id)
            schedules.remove_schedule(session, schedule_id)
            target = f"schedule:{schedule_id}"
            audit.record(session, posted.user.actor, "schedule.remove", target)
            session.commit()
        return redirect("/admin/schedules", "schedule_removed")

    return router
