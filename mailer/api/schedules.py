"""``/schedules`` (operators): digests sent at a time of day or on a cron expression."""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from mailer import audit, schedules
from mailer.api.deps import Api, not_found, unprocessable
from mailer.auth import Area, Principal
from mailer.models import Cadence, Schedule, utcnow


class ScheduleIn(BaseModel):
    topic: str = Field(description="Topic slug")
    cadence: Cadence = Cadence.DAILY
    at: str | None = Field(None, description="Local time of day, HH:MM (or give `cron`)")
    weekdays: str | None = Field(None, description="e.g. `fri` or `sun,wed` (with `at`)")
    cron: str | None = Field(None, description="Five-field cron expression (instead of `at`)")
    timezone: str = Field("Africa/Cairo", description="IANA time zone the time is read in")


class ScheduleOut(BaseModel):
    id: int
    topic: str
    cadence: str
    at: str | None
    weekdays: str | None
    cron: str | None
    timezone: str
    enabled: bool
    description: str
    last_due_at: datetime | None
    next_runs: list[datetime] = Field(description="The next five times it fires (UTC)")


def schedule_out(schedule: Schedule) -> ScheduleOut:
    return ScheduleOut(
        id=schedule.id,
        topic=schedule.topic.slug,
        cadence=schedule.cadence,
        at=schedule.at_time,
        weekdays=schedule.weekdays,
        cron=schedule.cron,
        timezone=schedule.timezone,
        enabled=schedule.enabled,
        description=schedules.describe(schedule),
        last_due_at=schedule.last_due_at,
        next_runs=schedules.next_runs(schedule, utcnow()) if schedule.enabled else [],
    )


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["schedules"], dependencies=[Depends(api.require(Area.SCHEDULES))])
    Operator = Annotated[Principal, Depends(api.require(Area.SCHEDULES))]

    def existing(session: Session, schedule_id: int) -> Schedule:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None:
            raise not_found(f"schedule {schedule_id}")
        return schedule

    @router.get("/schedules", summary="Every schedule and when it fires next")
    def list_schedules() -> list[ScheduleOut]:
        with api.session() as session:
            return [schedule_out(s) for s in schedules.list_schedules(session)]

    @router.post("/schedules", status_code=status.HTTP_201_CREATED, summary="Add a schedule")
    def add(body: ScheduleIn, caller: Operator) -> ScheduleOut:
        with api.session() as session:
            try:
                schedule = schedules.add_schedule(
                    session,
                    topic=body.topic,
                    cadence=body.cadence,
                    at=body.at,
                    timezone=body.timezone,
                    weekdays=body.weekdays,
                    cron=body.cron,
                )
            except ValueError as exc:
                raise unprocessable(str(exc)) from exc
            target = f"schedule:{schedule.id}"
            audit.record(session, caller.actor, "schedule.add", target, body.model_dump())
            session.commit()
            return schedule_out(schedule)

    def set_enabled(schedule_id: int, caller: Principal, enabled: bool) -> ScheduleOut:
        with api.session() as session:
            existing(session, schedule_id)
            schedule = schedules.set_enabled(session, schedule_id, enabled)
            action = "schedule.resume" if enabled else "schedule.pause"
            audit.record(session, caller.actor, action, f"schedule:{schedule_id}")
            session.commit()
            return schedule_out(schedule)

    @router.post("/schedules/{schedule_id}/pause", summary="Stop firing (until resumed)")
    def pause(schedule_id: int, caller: Operator) -> ScheduleOut:
        return set_enabled(schedule_id, caller, False)

    @router.post(
        "/schedules/{schedule_id}/resume", summary="Fire again (missed slots are not sent)"
    )
    def resume(schedule_id: int, caller: Operator) -> ScheduleOut:
        return set_enabled(schedule_id, caller, True)

    @router.delete(
        "/schedules/{schedule_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Remove a schedule (its past editions stay)",
        response_class=Response,
    )
    def remove(schedule_id: int, caller: Operator) -> None:
        with api.session() as session:
            existing(session, schedule_id)
            schedules.remove_schedule(session, schedule_id)
            audit.record(session, caller.actor, "schedule.remove", f"schedule:{schedule_id}")
            session.commit()

    return router
