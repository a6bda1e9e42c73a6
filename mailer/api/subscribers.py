"""``/subscribers`` (operators): list and search, one reader, export (JSON lines), import."""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import or_, select

from mailer import audit
from mailer.addresses import InvalidAddress
from mailer.api.deps import After, Api, Limit, not_found
from mailer.auth import Area, Principal
from mailer.models import Cadence, Subscriber, SubscriberStatus, Subscription, Topic
from mailer.subscribers import ReaderRow, import_readers
from mailer.suppress import hash_for

EXPORT_CHUNK = 1000


class SubscriberOut(BaseModel):
    id: int
    email: str | None = Field(description="None once the reader asked to be forgotten")
    name: str
    locale: str
    timezone: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None


class SubscriptionOut(BaseModel):
    topic: str
    cadence: str


class SubscriberDetail(SubscriberOut):
    consent_at: datetime | None
    consent_source: str | None
    subscriptions: list[SubscriptionOut]


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next_after: int | None = Field(description="Pass as `after` for the next page")


class ReaderIn(BaseModel):
    email: str
    name: str = Field("", max_length=200)
    topics: list[str] = Field(default_factory=lambda: ["breaking"], min_length=1)
    cadence: Cadence = Cadence.INSTANT
    locale: str = Field("ar", max_length=16)
    timezone: str = Field("Africa/Cairo", max_length=64)


class ImportIn(BaseModel):
    readers: list[ReaderIn] = Field(min_length=1, max_length=10_000)
    consented: bool = Field(False, description="Readers already opted in (else: pending)")


class ImportProblem(BaseModel):
    line: int = Field(description="Position in `readers`, from 1")
    error: str


class ImportOut(BaseModel):
    read: int
    added: int
    existing: int
    errors: list[ImportProblem]


def subscriber_out(s: Subscriber) -> SubscriberOut:
    return SubscriberOut(
        id=s.id,
        email=s.email,
        name=s.name,
        locale=s.locale,
        timezone=s.timezone,
        status=s.status,
        created_at=s.created_at,
        confirmed_at=s.confirmed_at,
        unsubscribed_at=s.unsubscribed_at,
    )


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["subscribers"], dependencies=[Depends(api.require(Area.SUBSCRIBERS))])
    Operator = Annotated[Principal, Depends(api.require(Area.SUBSCRIBERS))]

    @router.get("/subscribers", summary="Readers by id, with search and keyset paging")
    def list_subscribers(
        limit: Limit = 50,
        after: After = None,
        q: Annotated[
            str | None, Query(description="Address (exact) or part of name/address")
        ] = None,
        status: SubscriberStatus | None = None,
    ) -> SubscriberPage:
        query = select(Subscriber).order_by(Subscriber.id).limit(limit)
        if after is not None:
            query = query.where(Subscriber.id > after)
        if status is not None:
            query = query.where(Subscriber.status == status)
        if q:
            try:  # a whole address: the indexed hash finds it whatever its case
                exact = Subscriber.email_hash == hash_for(q, api.settings)
            except InvalidAddress:
                exact = None
            # A literal search: % and _ typed by the operator match themselves.
            text = q.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{text}%"
            match = or_(
                Subscriber.email.ilike(pattern, escape="\\"),
                Subscriber.name.ilike(pattern, escape="\\"),
            )
            query = query.where(match if exact is None else or_(exact, match))
        with api.session() as session:
            rows = list(session.scalars(query))
        items = [subscriber_out(s) for s in rows]
        return SubscriberPage(items=items, next_after=rows[-1].id if len(rows) == limit else None)

    @router.get(
        "/subscribers/export",
        summary="Every reader as JSON lines (one SubscriberOut per line)",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {
                    "application/x-ndjson": {
                        "schema": {"$ref": "#/components/schemas/SubscriberOut"}
                    }
                }
            }
        },
    )
    def export(caller: Operator, status: SubscriberStatus | None = None) -> StreamingResponse:
        with api.engine.begin() as conn:  # reading every address is worth a line in the log
            audit.record(
                conn, caller.actor, "subscribers.export", "subscribers", {"status": status}
            )

        def lines() -> Iterator[bytes]:
            after = 0
            while True:  # keyset chunks, each in its own short session: no long transaction
                query = (
                    select(Subscriber)
                    .where(Subscriber.id > after)
                    .order_by(Subscriber.id)
                    .limit(EXPORT_CHUNK)
                )
                if status is not None:
                    query = query.where(Subscriber.status == status)
                with api.session() as session:
                    rows = list(session.scalars(query))
                for row in rows:
                    data = subscriber_out(row).model_dump(mode="json")
                    yield json.dumps(data, ensure_ascii=False).encode() + b"\n"
                if len(rows) < EXPORT_CHUNK:
                    return
                after = rows[-1].id

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @router.get("/subscribers/{subscriber_id}", summary="One reader and their subscriptions")
    def get_subscriber(subscriber_id: int) -> SubscriberDetail:
        with api.session() as session:
            reader = session.get(Subscriber, subscriber_id)
            if reader is None:
                raise not_found(f"subscriber {subscriber_id}")
            subscriptions = session.execute(
                select(Topic.slug, Subscription.cadence)
                .join(Topic, Topic.id == Subscription.topic_id)
                .where(Subscription.subscriber_id == subscriber_id)
                .order_by(Topic.position, Subscription.cadence)
            ).all()
            return SubscriberDetail(
                **subscriber_out(reader).model_dump(),
                consent_at=reader.consent_at,
                consent_source=reader.consent_source,
                subscriptions=[SubscriptionOut(topic=t, cadence=c) for t, c in subscriptions],
            )

    @router.post("/subscribers/import", summary="Add readers (existing ones keep their status)")
    def import_(body: ImportIn, caller: Operator) -> ImportOut:
        rows = [
            ReaderRow(
                line=i,
                email=r.email,
                name=r.name,
                topics=tuple(r.topics),
                cadence=r.cadence,
                locale=r.locale,
                timezone=r.timezone,
            )
            for i, r in enumerate(body.readers, start=1)
        ]
        report = import_readers(
            api.engine, rows, api.settings, consented=body.consented, source=f"api:{caller.name}"
        )
        out = ImportOut(
            read=report.read,
            added=report.added,
            existing=report.existing,
            errors=[ImportProblem(line=line, error=e) for line, e in report.errors],
        )
        with api.engine.begin() as conn:
            details = out.model_dump(exclude={"errors"}) | {"refused": len(out.errors)}
            audit.record(conn, caller.actor, "subscribers.import", "subscribers", details)
        return out

    return router
