"""``/editions`` and ``/digests`` (operators): watch, pause, resume, cancel, preview, test, resend.

Progress is live: counts come from the deliveries at the moment of the request (or from the
rolled-up counts once old deliveries were pruned).
"""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import audit, editions, operations
from mailer.addresses import InvalidAddress
from mailer.api.deps import Api, Limit, conflict, not_found, unprocessable
from mailer.auth import Area, Principal
from mailer.editions import EditionError
from mailer.models import Cadence, Edition, EditionStatus


class ProgressOut(BaseModel):
    total: int
    done: int = Field(description="Readers with a final outcome (sent, failed, bounced…)")
    fraction: float
    counts: dict[str, int] = Field(description="Readers by delivery status")


class EditionOut(BaseModel):
    id: int
    kind: str
    status: str
    reason: str
    subject: str
    topic: str
    cadence: str
    story_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut | None = Field(None, description="Only when one edition is asked for")


class StartedOut(BaseModel):
    edition_id: int
    created: bool
    planned: int = Field(description="Readers the edition was fanned out to")
    status: str


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


class TestIn(BaseModel):
    to: list[str] = Field(min_length=1, max_length=20, description="Seed addresses")


class TestSendOut(BaseModel):
    address: str
    outcome: str = Field(description="sent, temporary, permanent or hard_bounce")
    code: int | None
    text: str


class PauseIn(BaseModel):
    reason: str = Field("paused by an operator", max_length=500)


class ResendOut(BaseModel):
    requeued: int
    edition: EditionOut


class DigestIn(BaseModel):
    topic: str
    cadence: Cadence = Cadence.DAILY


def edition_out(session: Session, edition: Edition, with_progress: bool = True) -> EditionOut:
    progress = None
    if with_progress:
        state = editions.progress(session, edition)
        # Zeros dropped: the same shape before and after old deliveries are pruned.
        counts = {status: n for status, n in state.counts.items() if n}
        progress = ProgressOut(
            total=state.total, done=state.done, fraction=state.fraction, counts=counts
        )
    return EditionOut(
        id=edition.id,
        kind=edition.kind,
        status=edition.status,
        reason=edition.status_reason,
        subject=edition.subject,
        topic=edition.topic.slug,
        cadence=edition.cadence,
        story_id=edition.story_id,
        created_at=edition.created_at,
        started_at=edition.started_at,
        finished_at=edition.finished_at,
        progress=progress,
    )


def load(api: Api, edition_id: int) -> EditionOut:
    with api.session() as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise not_found(f"edition {edition_id}")
        return edition_out(session, edition)


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["editions"], dependencies=[Depends(api.require(Area.EDITIONS))])
    Operator = Annotated[Principal, Depends(api.require(Area.EDITIONS))]

    def control(edition_id: int, caller: Principal, action: str, **details: object) -> EditionOut:
        load(api, edition_id)  # 404 before anything else
        try:
            if action == "pause":
                api.service.pause(edition_id, str(details["reason"]))
            elif action == "resume":
                details["batches"] = api.service.resume(edition_id)
            else:
                api.service.cancel(edition_id)
        except EditionError as exc:
            raise conflict(str(exc)) from exc
        # The service commits the change itself; the event follows in its own transaction.
        with api.engine.begin() as conn:
            audit.record(conn, caller.actor, f"edition.{action}", f"edition:{edition_id}", details)
        return load(api, edition_id)

    @router.get("/editions", summary="Editions, newest first")
    def list_editions(
        limit: Limit = 50,
        before: Annotated[int | None, Query(description="Only editions older (by id)")] = None,
        status_: Annotated[EditionStatus | None, Query(alias="status")] = None,
        kind: str | None = None,
    ) -> list[EditionOut]:
        with api.session() as session:
            query = select(Edition).order_by(Edition.id.desc()).limit(limit)
            if before is not None:
                query = query.where(Edition.id < before)
            if status_ is not None:
                query = query.where(Edition.status == status_)
            if kind:
                query = query.where(Edition.kind == kind)
            return [edition_out(session, e, False) for e in session.scalars(query)]

    @router.get("/editions/{edition_id}", summary="One edition with live progress")
    def get_edition(edition_id: int) -> EditionOut:
        return load(api, edition_id)

    @router.post("/editions/{edition_id}/pause", summary="Stop claiming new batches")
    def pause(edition_id: int, caller: Operator, body: PauseIn | None = None) -> EditionOut:
        return control(edition_id, caller, "pause", reason=(body or PauseIn()).reason)

    @router.post("/editions/{edition_id}/resume", summary="Carry on where it stopped")
    def resume(edition_id: int, caller: Operator) -> EditionOut:
        return control(edition_id, caller, "resume")

    @router.post("/editions/{edition_id}/cancel", summary="Cancel every reader not yet sent")
    def cancel(edition_id: int, caller: Operator) -> EditionOut:
        return control(edition_id, caller, "cancel")

    @router.get("/editions/{edition_id}/preview", summary="What one reader would get")
    def preview(
        edition_id: int, reader: Annotated[str, Query(description="The reader's address")]
    ) -> PreviewOut:
        try:
            shown = operations.preview(api.engine, api.settings, edition_id, reader)
        except operations.NotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
        except InvalidAddress as exc:
            raise unprocessable(str(exc)) from exc
        return PreviewOut(subject=shown.subject, html=shown.html, text=shown.text)

    @router.post("/editions/{edition_id}/test", summary="Send to seed addresses (no deliveries)")
    def test(edition_id: int, body: TestIn, caller: Operator) -> list[TestSendOut]:
        transport = api.transport()
        try:
            results = operations.test_send(
                api.engine, api.settings, transport, edition_id, body.to, caller.actor
            )
        except operations.NotFound as exc:
            raise not_found(f"edition {edition_id}") from exc
        except ValueError as exc:
            raise unprocessable(str(exc)) from exc
        finally:
            transport.close()
        return [TestSendOut(**r.__dict__) for r in results]

    @router.post("/editions/{edition_id}/resend-failed", summary="Retry only failed recipients")
    def resend_failed(edition_id: int, caller: Operator) -> ResendOut:
        try:
            count = operations.resend_failed(
                api.engine, api.settings, api.service.dispatcher, edition_id, caller.actor
            )
        except operations.NotFound as exc:
            raise not_found(f"edition {edition_id}") from exc
        except EditionError as exc:
            raise conflict(str(exc)) from exc
        return ResendOut(requeued=count, edition=load(api, edition_id))

    @router.post(
        "/digests",
        status_code=status.HTTP_201_CREATED,
        summary="Send a digest of the topic's stories since its last one",
    )
    def send_digest(body: DigestIn, caller: Operator) -> StartedOut:
        try:
            started = api.service.send_digest(body.topic, body.cadence)
        except EditionError as exc:
            raise unprocessable(str(exc)) from exc
        out = StartedOut(**started.__dict__)
        with api.engine.begin() as conn:
            audit.record(
                conn, caller.actor, "digest.send", f"edition:{out.edition_id}", body.model_dump()
            )
        return out

    return router
