"""``/alerts`` (editors): a story's breaking-news alert, once per story, however often pressed.

Two editors pressing at once get one edition: the second caller is answered with the first
edition's id (200 instead of 201). A test send to seed addresses can go first; it creates no
deliveries and is recorded in the audit log.
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from mailer import audit, operations
from mailer.api.deps import Api, Limit, not_found, unprocessable
from mailer.api.editions import EditionOut, StartedOut, TestSendOut, edition_out, load
from mailer.auth import Area, Principal
from mailer.editions import EditionError
from mailer.models import Edition, EditionKind


class AlertIn(BaseModel):
    story_id: int
    test_to: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Seed addresses that get a test copy first (skipped if the alert exists)",
    )


class AlertOut(StartedOut):
    tests: list[TestSendOut] = Field(default_factory=list)


class AlertTestIn(BaseModel):
    story_id: int
    to: list[str] = Field(min_length=1, max_length=20)


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["alerts"], dependencies=[Depends(api.require(Area.ALERTS))])
    Editor = Annotated[Principal, Depends(api.require(Area.ALERTS))]

    def send_tests(story_id: int, addresses: list[str], caller: Principal) -> list[TestSendOut]:
        transport = api.transport()
        try:
            results = operations.test_send_alert(
                api.engine,
                api.settings,
                transport,
                api.service.renderer,
                story_id,
                addresses,
                caller.actor,
            )
        except operations.NotFound as exc:
            raise not_found(f"story {story_id}") from exc
        except ValueError as exc:
            raise unprocessable(str(exc)) from exc
        finally:
            transport.close()
        return [TestSendOut(**r.__dict__) for r in results]

    def existing(story_id: int) -> int | None:
        with api.session() as session:
            return session.scalar(
                select(Edition.id).where(
                    Edition.kind == EditionKind.ALERT, Edition.story_id == story_id
                )
            )

    @router.post(
        "/alerts",
        status_code=status.HTTP_201_CREATED,
        summary="Send the story's alert to every alert subscriber (once per story)",
        responses={200: {"model": AlertOut, "description": "Already triggered: the first one"}},
    )
    def trigger(body: AlertIn, caller: Editor, response: Response) -> AlertOut:
        tests: list[TestSendOut] = []
        if body.test_to and existing(body.story_id) is None:
            tests = send_tests(body.story_id, body.test_to, caller)
        try:
            started = api.service.trigger_alert(body.story_id)
        except EditionError as exc:
            raise not_found(f"story {body.story_id}") from exc
        details = {
            "story_id": body.story_id,
            "created": started.created,
            "planned": started.planned,
        }
        with api.engine.begin() as conn:
            audit.record(
                conn, caller.actor, "alert.trigger", f"edition:{started.edition_id}", details
            )
        if not started.created:
            response.status_code = status.HTTP_200_OK
        return AlertOut(**started.__dict__, tests=tests)

    @router.post("/alerts/test", summary="Send the story's alert to seed addresses only")
    def test(body: AlertTestIn, caller: Editor) -> list[TestSendOut]:
        return send_tests(body.story_id, body.to, caller)

    @router.get("/alerts", summary="Alerts, newest first")
    def list_alerts(limit: Limit = 50, story_id: int | None = None) -> list[EditionOut]:
        with api.session() as session:
            query = (
                select(Edition)
                .where(Edition.kind == EditionKind.ALERT)
                .order_by(Edition.id.desc())
                .limit(limit)
            )
            if story_id is not None:
                query = query.where(Edition.story_id == story_id)
            return [edition_out(session, e, False) for e in session.scalars(query)]

    @router.get("/alerts/{edition_id}", summary="One alert with live progress")
    def get_alert(edition_id: int) -> EditionOut:
        found = load(api, edition_id)
        if found.kind != EditionKind.ALERT:
            raise not_found(f"alert {edition_id}")
        return found

    return router
