"""High-level operations shared by the CLI, the JSON API and the admin UI.

Each opens its own unit of work, commits, and only then wakes workers (a worker must never
receive a batch whose rows are not committed yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import editions
from mailer.config import Settings
from mailer.dispatch import Dispatcher
from mailer.models import Edition, EditionStatus
from mailer.rendering import Renderer
from mailer.sweeper import pending_batches


@dataclass(frozen=True)
class Started:
    edition_id: int
    created: bool
    planned: int
    status: str


class Service:
    def __init__(
        self, engine: Engine, settings: Settings, dispatcher: Dispatcher, renderer: Renderer
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.dispatcher = dispatcher
        self.renderer = renderer

    def _start(self, session: Session, edition: Edition) -> Started:
        planned = editions.plan(session, edition)
        found, queue = pending_batches(session, edition, self.settings), editions.queue_for(edition)
        edition_id, status = edition.id, edition.status
        session.commit()
        self.dispatcher.dispatch(queue, found)
        return Started(edition_id, True, planned, status)

    def trigger_alert(self, story_id: int) -> Started:
        """Create, plan and start the story's alert; a second trigger returns the first."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                edition, created = editions.create_alert(session, story_id, self.renderer)
                if not created:
                    return Started(edition.id, False, edition.total_count, edition.status)
                session.flush()
            except IntegrityError:  # a concurrent trigger won the race: report its edition
                session.rollback()
                edition, _ = editions.create_alert(session, story_id, self.renderer)
                return Started(edition.id, False, edition.total_count, edition.status)
            return self._start(session, edition)

    def send_digest(
        self,
        topic: str,
        cadence: str,
        schedule_id: int | None = None,
        due_at: datetime | None = None,
    ) -> Started:
        """Create, plan and start a digest; an empty one is recorded as skipped, not sent.

        With ``schedule_id`` and ``due_at`` (the beat's tick), a second call for the same pair
        raises :class:`IntegrityError` (one edition per schedule and due time).
        """
        with Session(self.engine, expire_on_commit=False) as session:
            edition = editions.create_digest(
                session,
                topic,
                cadence,
                self.renderer,
                limit=self.settings.digest_story_limit,
                schedule_id=schedule_id,
                due_at=due_at,
            )
            if edition.status == EditionStatus.SKIPPED:
                session.commit()
                return Started(edition.id, True, 0, edition.status)
            return self._start(session, edition)

    def pause(self, edition_id: int, reason: str = "paused by an operator") -> None:
        with Session(self.engine) as session, session.begin():
            editions.set_paused(session, edition_id, True, reason)

    def resume(self, edition_id: int) -> int:
        """Resume and wake workers for what is left; returns the number of batches."""
        with Session(self.engine) as session:
            edition = editions.set_paused(session, edition_id, False)
            found, queue = (
                pending_batches(session, edition, self.settings),
                editions.queue_for(edition),
            )
            session.commit()
        self.dispatcher.dispatch(queue, found)
        return len(found)

    def cancel(self, edition_id: int) -> None:
        with Session(self.engine) as session, session.begin():
            editions.cancel(session, edition_id)
