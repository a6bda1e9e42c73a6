"""``/suppressions`` (operators): addresses never mailed again, whatever the reader's status."""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import delete

from mailer import audit, suppress
from mailer.addresses import InvalidAddress
from mailer.api.deps import Api, Limit, not_found, unprocessable
from mailer.auth import Area, Principal
from mailer.models import Suppression


class SuppressionIn(BaseModel):
    email: str
    reason: str = Field("manual", max_length=suppress.REASON_MAX)
    source: str = Field("", max_length=200, description="Where it came from (a ticket, a list)")


class SuppressionOut(BaseModel):
    id: int
    email: str | None = Field(description="None once the reader asked to be forgotten")
    reason: str
    source: str
    created_at: datetime


class SuppressionPage(BaseModel):
    total: int
    items: list[SuppressionOut]


def out(row: suppress.SuppressionRow) -> SuppressionOut:
    return SuppressionOut(**row.__dict__)


def routes(api: Api) -> APIRouter:
    router = APIRouter(
        tags=["suppressions"], dependencies=[Depends(api.require(Area.SUPPRESSIONS))]
    )
    Operator = Annotated[Principal, Depends(api.require(Area.SUPPRESSIONS))]

    @router.get("/suppressions", summary="Suppressions, newest first")
    def list_suppressions(
        limit: Limit = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        q: Annotated[str | None, Query(description="Part of an address, or a whole one")] = None,
    ) -> SuppressionPage:
        with api.engine.connect() as conn:
            rows = suppress.list_suppressions(conn, limit, offset, q, settings=api.settings)
            total = suppress.count_suppressions(conn, q, settings=api.settings)
        return SuppressionPage(total=total, items=[out(r) for r in rows])

    @router.post(
        "/suppressions",
        status_code=status.HTTP_201_CREATED,
        summary="Suppress an address (201), or show its existing suppression (200)",
        responses={200: {"model": SuppressionOut, "description": "It was already suppressed"}},
    )
    def add(body: SuppressionIn, caller: Operator, response: Response) -> SuppressionOut:
        source = body.source or f"api:{caller.name}"
        with api.engine.begin() as conn:
            try:
                row, created = suppress.add_suppression(
                    conn, body.email, api.settings, reason=body.reason, source=source
                )
            except (InvalidAddress, ValueError) as exc:
                raise unprocessable(str(exc)) from exc
            if created:
                details = {"reason": row.reason, "source": source}
                audit.record(
                    conn, caller.actor, "suppression.add", f"suppression:{row.id}", details
                )
        if not created:
            response.status_code = status.HTTP_200_OK
        return out(row)

    @router.delete(
        "/suppressions/{suppression_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Lift a suppression (the reader's own status is not changed)",
        response_class=Response,
    )
    def remove(suppression_id: int, caller: Operator) -> None:
        with api.engine.begin() as conn:
            # By id: an erased entry has no address left to name it by.
            gone = conn.execute(delete(Suppression).where(Suppression.id == suppression_id))
            if not gone.rowcount:
                raise not_found(f"suppression {suppression_id}")
            audit.record(conn, caller.actor, "suppression.remove", f"suppression:{suppression_id}")

    return router
