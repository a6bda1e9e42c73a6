"""``/stats`` (operators) and ``/audit`` (admins): how the service is doing, who did what."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from mailer import audit
from mailer.api.deps import Api, Limit
from mailer.auth import Area
from mailer.models import Delivery, Edition, Subscriber, utcnow


class StatsOut(BaseModel):
    readers: dict[str, int] = Field(description="Readers by status")
    editions: dict[str, int] = Field(description="Editions by status")
    deliveries_24h: dict[str, int] = Field(
        description="Messages of editions started in the last 24 hours, by delivery status"
    )


class AuditOut(BaseModel):
    id: int
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    created_at: datetime


def routes(api: Api) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/stats",
        tags=["stats"],
        dependencies=[Depends(api.require(Area.STATS))],
        summary="Readers, editions and the last day's messages by status",
    )
    def stats() -> StatsOut:
        since = utcnow() - timedelta(hours=24)
        with api.session() as session:
            readers = session.execute(
                select(Subscriber.status, func.count()).group_by(Subscriber.status)
            ).all()
            editions = session.execute(
                select(Edition.status, func.count()).group_by(Edition.status)
            ).all()
            # Through the editions of the day, so the index on (edition_id, status) serves it.
            day = session.execute(
                select(Delivery.status, func.count())
                .join(Edition, Edition.id == Delivery.edition_id)
                .where(Edition.started_at >= since)
                .group_by(Delivery.status)
            ).all()
        return StatsOut(
            readers={str(s): int(n) for s, n in readers},
            editions={str(s): int(n) for s, n in editions},
            deliveries_24h={str(s): int(n) for s, n in day},
        )

    @router.get(
        "/audit",
        tags=["audit"],
        dependencies=[Depends(api.require(Area.AUDIT))],
        summary="The audit log, newest first",
    )
    def audit_log(
        limit: Limit = 100,
        before: Annotated[int | None, Query(description="Only events older (by id)")] = None,
        action: str | None = None,
    ) -> list[AuditOut]:
        with api.session() as session:
            events = audit.recent(session, limit=limit, before_id=before, action=action)
            return [
                AuditOut(
                    id=e.id,
                    actor=e.actor,
                    action=e.action,
                    target=e.target,
                    details=e.details,
                    created_at=e.created_at,
                )
                for e in events
            ]

    return router
