"""Claim, send, record — one message at a time (DESIGN.md invariant 4).

A batch task claims small chunks of its id range with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` makes the conditional UPDATE atomic), sends each
message over the process's one SMTP connection, and commits each result as soon as the server
answers. A killed worker loses at most the one message accepted but not yet recorded; its
leased rows are reclaimed by the sweeper when the lease expires.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime

import psycopg
from sqlalchemy import Connection, Engine, bindparam, exists, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.dispatch import Batch
from mailer.dkim import BodyHasher, DkimSigner
from mailer.editions import eligible, topic_ids_for
from mailer.message import MessageSpec, MessageTemplate
from mailer.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from mailer.suppress import suppress_address
from mailer.tokens import PREFERENCES, UNSUBSCRIBE, Tokens
from mailer.transport import Outcome, SendResult, Transport

log = logging.getLogger(__name__)

NAME_LIMIT = 100
_ALERT_QUEUED = (
    select(Edition.id)
    .where(
        Edition.kind == EditionKind.ALERT,
        Edition.status == EditionStatus.SENDING,
        exists().where(Delivery.edition_id == Edition.id, Delivery.status == DeliveryStatus.QUEUED),
    )
    .limit(1)
)
# The hot path's UPDATE, built once: building it per message (ORM-annotated columns, a fresh
# cache key) costs ~150 µs of CPU, four times what executing it costs.
_RECORD_SENT = (
    update(Delivery)
    .where(Delivery.id == bindparam("delivery_id"), Delivery.lease_owner == bindparam("owner"))
    .values(
        status=DeliveryStatus.SENT,
        sent_at=bindparam("sent_at"),
        message_id=bindparam("message_id"),
        last_code=bindparam("last_code"),
        last_response=bindparam("last_response"),
        lease_owner=None,
        lease_expires_at=None,
    )
)

# The same UPDATE for PostgreSQL's driver itself, as a prepared statement: SQLAlchemy's execution
# machinery costs ~65 µs of CPU per message on top of psycopg's own ~60 µs.
_RECORD_SENT_PG = (
    f"UPDATE deliveries SET status = '{DeliveryStatus.SENT.value}', sent_at = %(sent_at)s, "
    "message_id = %(message_id)s, last_code = %(last_code)s, last_response = %(last_response)s, "
    "lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = %(delivery_id)s AND lease_owner = %(owner)s"
)


# What a lost or restarted database looks like: SQLAlchemy's wrapper, or psycopg's own from the
# raw cursor of _sent_writer.
_CONNECTION_LOST = (OperationalError, InterfaceError, psycopg.OperationalError)


def _sent_writer(conn: Connection) -> Callable[[dict[str, object]], int]:
    """Run the record of one accepted message on ``conn``; returns the rows updated."""
    if conn.dialect.name == "postgresql":
        # In autocommit (see _send_chunk), so each UPDATE commits by itself.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

        def write(params: dict[str, object]) -> int:
            cursor.execute(_RECORD_SENT_PG, params, prepare=True)
            return int(cursor.rowcount)

        return write

    def write_portably(params: dict[str, object]) -> int:
        updated = conn.execute(_RECORD_SENT, params).rowcount
        conn.commit()
        return updated

    return write_portably


def _with_readers(
    conn: Connection, claim: ReturningUpdate[int, int | None, int, datetime]
) -> list[Claimed]:
    """Run the claiming UPDATE; each claimed row with its reader's address and name, by id.

    On PostgreSQL one statement (the UPDATE as a CTE joined to subscribers) whose text never
    changes, so it is parsed and planned once per connection; a second query with an IN list
    of the claimed ids would be new SQL at every chunk size. SQLite cannot put an UPDATE in a
    CTE, so it asks twice.
    """
    fields = (Subscriber.email, Subscriber.name, Subscriber.needs_smtputf8)
    if conn.dialect.name == "postgresql":
        mine = claim.cte("claimed")
        rows = conn.execute(
            select(mine.c.id, mine.c.subscriber_id, mine.c.attempts, mine.c.created_at, *fields)
            .join_from(mine, Subscriber, Subscriber.id == mine.c.subscriber_id)
            .order_by(mine.c.id)
        ).all()
        return [
            Claimed(r.id, r.subscriber_id, r.email, r.name or "", bool(r.needs_smtputf8),
                    r.attempts, r.created_at)
            for r in rows
        ]  # fmt: skip
    claimed_rows = conn.execute(claim).all()
    if not claimed_rows:
        return []
    readers = {
        r.id: r
        for r in conn.execute(
            select(Subscriber.id, *fields).where(
                Subscriber.id.in_([row.subscriber_id for row in claimed_rows])
            )
        )
    }
    return [
        Claimed(row.id, row.subscriber_id, reader.email, reader.name or "",
                bool(reader.needs_smtputf8), row.attempts, row.created_at)
        for row in sorted(claimed_rows, key=lambda r: r.id)
        if (reader := readers.get(row.subscriber_id)) is not None
    ]  # fmt: skip


@dataclass
class PreparedEdition:
    """Everything per edition that is computed once per worker process, not per reader."""

    edition_id: int
    kind: str
    topic_id: int
    topic_ids: list[int]
    cadence: str
    spec: MessageSpec
    templates: dict[bool, MessageTemplate] = field(default_factory=dict)
    hashers: dict[bool, BodyHasher] = field(default_factory=dict)

    def template(self, eightbit: bool) -> MessageTemplate:
        if eightbit not in self.templates:
            self.templates[eightbit] = MessageTemplate.build(self.spec, eightbit=eightbit)
        return self.templates[eightbit]

    def body_hasher(self, eightbit: bool) -> BodyHasher:
        if eightbit not in self.hashers:
            self.hashers[eightbit] = BodyHasher(*self.template(eightbit).body())
        return self.hashers[eightbit]


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    needs_smtputf8: bool
    attempts: int
    created_at: datetime


@dataclass
class BatchReport:
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    stopped: str = ""


def greeting(name: str) -> str:
    clean = "".join(ch for ch in name[:NAME_LIMIT] if ch.isprintable()).strip()
    return f"مرحباً {clean}،" if clean else "مرحباً،"


class EditionSender:
    """Sends batches for one worker process: one transport, one cache of prepared editions."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        transport: Transport,
        *,
        now: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.transport = transport
        self.tokens = Tokens(settings)
        # Built once per process; a broken DKIM configuration fails here, before any send.
        self.signer = DkimSigner.from_settings(settings)
        self.now = now
        self.jitter = jitter
        self._prepared: dict[int, PreparedEdition] = {}
        self._date_cache: tuple[int, str] = (0, "")
        # Editions this process paused for their error rate, and when each was last checked.
        self._self_paused: set[int] = set()
        self._error_checked: dict[int, tuple[float, int]] = {}

    # -- preparation, once per edition per process ------------------------------------------

    def prepare(self, edition_id: int) -> PreparedEdition | None:
        if edition_id in self._prepared:
            return self._prepared[edition_id]
        with Session(self.engine) as session:
            edition = session.get(Edition, edition_id)
            if edition is None:
                return None
            spec = MessageSpec(
                subject=edition.subject,
                html=edition.html,
                text=edition.text,
                sender=self.settings.sender,
                reply_to=self.settings.reply_to or None,
                list_id=self.settings.list_id,
                kind=edition.kind,
                feedback_id=f"{edition.id}:{edition.kind}:{self.settings.feedback_id_sender}",
            )
            prepared = PreparedEdition(
                edition_id=edition.id,
                kind=edition.kind,
                topic_id=edition.topic_id,
                topic_ids=topic_ids_for(session, edition),
                cadence=edition.cadence,
                spec=spec,
            )
        if len(self._prepared) > 16:  # a worker lives for many editions: keep the cache small
            self._prepared.pop(next(iter(self._prepared)))
        self._prepared[edition_id] = prepared
        return prepared

    # -- the batch loop --------------------------------------------------------------------

    def send_batch(self, batch: Batch) -> BatchReport:
        report = BatchReport()
        prepared = self.prepare(batch.edition_id)
        if prepared is None:
            report.stopped = "edition not found"
            return report
        owner = uuid.uuid4().hex
        while True:
            if prepared.kind != EditionKind.ALERT and self.settings.digests_yield_to_alerts:
                self._yield_to_alerts()
            chunk = self._claim(prepared, batch, owner)
            if chunk is None:
                report.stopped = "edition not sending"
                return report
            if not chunk:
                self._skip_ineligible(prepared, batch)
                return report
            report.claimed += len(chunk)
            if not self._send_chunk(prepared, chunk, owner, report):
                report.stopped = "edition paused or cancelled"
                return report

    def _yield_to_alerts(self) -> None:
        """Alerts jump the queue (invariant 6) on shared CPUs and a shared SMTP server too:
        while an alert has readers queued, a digest claims nothing new. Bounded, so a stuck
        alert can delay a digest but never stop it; checked once per chunk. Only for workers
        that do not also serve the alerts queue (MAILER_DIGESTS_YIELD_TO_ALERTS): one that
        does would be holding the very process the alert is waiting for."""
        deadline = time.monotonic() + self.settings.lease_seconds / 3
        while time.monotonic() < deadline:
            with self.engine.connect() as conn:
                busy = conn.scalar(_ALERT_QUEUED)
            if busy is None:
                return
            time.sleep(0.05)

    def _edition_status(self, conn: Connection, edition_id: int) -> str | None:
        return conn.scalar(select(Edition.status).where(Edition.id == edition_id))

    def _claim(self, prepared: PreparedEdition, batch: Batch, owner: str) -> list[Claimed] | None:
        moment = self.now()
        with self.engine.begin() as conn:
            if self._edition_status(conn, batch.edition_id) != EditionStatus.SENDING:
                return None
            self._self_paused.discard(batch.edition_id)  # resumed since this process paused it
            candidates = (
                select(Delivery.id)
                .where(
                    Delivery.edition_id == batch.edition_id,
                    Delivery.status == DeliveryStatus.QUEUED,
                    Delivery.id.between(batch.first_id, batch.last_id),
                    eligible(Delivery.subscriber_id, prepared.topic_ids, prepared.cadence),
                )
                .order_by(Delivery.id)
                .limit(self.settings.claim_chunk)
                .with_for_update(skip_locked=True, of=Delivery)
            )
            claim = (
                update(Delivery)
                .where(Delivery.id.in_(candidates))
                .values(
                    status=DeliveryStatus.SENDING,
                    lease_owner=owner,
                    lease_expires_at=moment + timedelta(seconds=self.settings.lease_seconds),
                    attempts=Delivery.attempts + 1,
                )
                .returning(
                    Delivery.id, Delivery.subscriber_id, Delivery.attempts, Delivery.created_at
                )
            )
            claimed = _with_readers(conn, claim)
            if claimed:
                conn.execute(
                    update(Edition).where(Edition.id == batch.edition_id).values(progress_at=moment)
                )
        return claimed

    def _skip_ineligible(self, prepared: PreparedEdition, batch: Batch) -> None:
        """Rows left queued in the range belong to readers who left or were suppressed."""
        with self.engine.begin() as conn:
            if self._edition_status(conn, batch.edition_id) != EditionStatus.SENDING:
                return
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.edition_id == batch.edition_id,
                    Delivery.status == DeliveryStatus.QUEUED,
                    Delivery.id.between(batch.first_id, batch.last_id),
                    ~eligible(Delivery.subscriber_id, prepared.topic_ids, prepared.cadence),
                )
                .values(
                    status=DeliveryStatus.SUPPRESSED,
                    last_response="unsubscribed or suppressed before sending",
                )
            )

    def _send_chunk(
        self, prepared: PreparedEdition, chunk: Sequence[Claimed], owner: str, report: BatchReport
    ) -> bool:
        check_at = time.monotonic() + 1.0
        renew_at = time.monotonic() + self.settings.lease_seconds / 3
        # One connection for the chunk instead of a pool checkout (and its ping) per message.
        # On PostgreSQL in autocommit: each result is one UPDATE that commits by itself, one
        # round trip instead of BEGIN, UPDATE, COMMIT (the commit() calls are then no-ops).
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
            write_sent = _sent_writer(conn)
            return self._send_chunk_on(
                prepared, chunk, owner, report, (conn, write_sent), check_at, renew_at
            )

    def _send_chunk_on(
        self,
        prepared: PreparedEdition,
        chunk: Sequence[Claimed],
        owner: str,
        report: BatchReport,
        held: tuple[Connection, Callable[[dict[str, object]], int]],
        check_at: float,
        renew_at: float,
    ) -> bool:
        conn, write_sent = held
        for index, reader in enumerate(chunk):
            if prepared.edition_id in self._self_paused:
                self._release([c.delivery_id for c in chunk[index:]], owner)
                return False
            if time.monotonic() >= check_at:
                check_at = time.monotonic() + 1.0
                status = self._edition_status(conn, prepared.edition_id)
                conn.commit()  # SQLite: never hold BEGIN IMMEDIATE across a send
                if status != EditionStatus.SENDING:
                    self._release([c.delivery_id for c in chunk[index:]], owner)
                    return False
            if time.monotonic() >= renew_at:
                renew_at = time.monotonic() + self.settings.lease_seconds / 3
                self._renew([c.delivery_id for c in chunk[index:]], owner)
            try:
                result = self._send_one(prepared, reader)
            except Exception:
                self._release([c.delivery_id for c in chunk[index:]], owner)
                raise
            try:
                self._record(prepared, reader, result, owner, conn, write_sent)
            except _CONNECTION_LOST:
                # The server has the message; without its record the sweeper would send it
                # again. So record it on a new connection (a restarted PostgreSQL is back in
                # seconds, well inside the lease), then give the rest of this chunk back to be
                # claimed on a new connection.
                if not self._record_again(prepared, reader, result, owner):
                    raise
                self._release([c.delivery_id for c in chunk[index + 1 :]], owner)
                report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
                return True
            report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
        return True

    def _record_again(
        self, prepared: PreparedEdition, reader: Claimed, result: SendResult, owner: str
    ) -> bool:
        """:meth:`_record` on a fresh connection, tried until a third of the lease has gone."""
        deadline = time.monotonic() + self.settings.lease_seconds / 3
        while True:
            try:
                with self.engine.connect() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execution_options(isolation_level="AUTOCOMMIT")
                    self._record(prepared, reader, result, owner, conn, _sent_writer(conn))
                log.warning("recorded delivery %s on a new connection", reader.delivery_id)
                return True
            except _CONNECTION_LOST as exc:
                if time.monotonic() >= deadline:
                    log.error("could not record delivery %s: %s", reader.delivery_id, exc)
                    return False
                time.sleep(0.5)

    def _date(self) -> str:
        second = int(time.time())
        if self._date_cache[0] != second:
            self._date_cache = (second, format_datetime(self.now()))
        return self._date_cache[1]

    def message_for(
        self, prepared: PreparedEdition, reader: Claimed, *, eightbit: bool | None = None
    ) -> tuple[str, bytes]:
        """The reader's envelope sender and message exactly as sent: personalised, signed.

        Previews and test sends use this too, so they can never drift from the real thing.
        """
        unsubscribe = self.tokens.sign(
            UNSUBSCRIBE, [reader.subscriber_id, prepared.topic_id, prepared.cadence]
        )
        values = {
            ph.TO: reader.email,
            ph.MESSAGE_ID: self.tokens.message_id(prepared.edition_id, reader.subscriber_id),
            ph.DATE: self._date(),
            ph.UNSUBSCRIBE_URL: f"{self.settings.base_url}/unsubscribe/{unsubscribe}",
            ph.UNSUBSCRIBE_MAILTO: (
                f"mailto:unsubscribe@{self.settings.envelope_domain}?subject={unsubscribe}"
            ),
            ph.PREFERENCES_URL: (
                f"{self.settings.base_url}/preferences/"
                f"{self.tokens.sign(PREFERENCES, reader.subscriber_id)}"
            ),
            ph.GREETING: greeting(reader.name),
            ph.EMAIL: reader.email,
        }
        if eightbit is None:
            eightbit = self.transport.eightbitmime
        template = prepared.template(eightbit)
        encoded = template.encode(values)
        data = template.join(encoded)
        if self.signer is not None:  # after substitution: the signature covers the reader's copy
            body_hash = prepared.body_hasher(eightbit).body_hash(encoded)
            data = self.signer.sign(data, body_hash=body_hash)
        return self.tokens.verp_address(reader.delivery_id), data

    def _send_one(self, prepared: PreparedEdition, reader: Claimed) -> SendResult:
        envelope, data = self.message_for(prepared, reader)
        return self.transport.send(envelope, reader.email, data, smtputf8=reader.needs_smtputf8)

    def _backoff(self, attempts: int) -> float:
        base = self.settings.retry_base_seconds * 2 ** max(attempts - 1, 0)
        return float(min(self.settings.retry_max_seconds, base * (0.5 + self.jitter())))

    def _record(
        self,
        prepared: PreparedEdition,
        reader: Claimed,
        result: SendResult,
        owner: str,
        conn: Connection | None = None,
        write_sent: Callable[[dict[str, object]], int] | None = None,
    ) -> None:
        moment = self.now()
        if write_sent is not None and result.outcome == Outcome.SENT:
            updated = write_sent(
                {
                    "delivery_id": reader.delivery_id,
                    "owner": owner,
                    "sent_at": moment,
                    "message_id": self.tokens.message_id(prepared.edition_id, reader.subscriber_id),
                    "last_code": result.code,
                    "last_response": result.text[:1000],
                }
            )
            if not updated:
                log.warning("delivery %s was reclaimed while being sent", reader.delivery_id)
            return
        values: dict[str, object] = {
            "last_code": result.code,
            "last_response": result.text[:1000],
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if result.outcome == Outcome.SENT:
            values.update(
                status=DeliveryStatus.SENT,
                sent_at=moment,
                message_id=self.tokens.message_id(prepared.edition_id, reader.subscriber_id),
            )
        elif result.outcome == Outcome.TEMPORARY:
            too_old = (moment - reader.created_at).total_seconds() > self.settings.max_age_seconds
            if reader.attempts >= self.settings.max_attempts or too_old:
                values.update(
                    status=DeliveryStatus.FAILED,
                    last_response=f"gave up after {reader.attempts} attempts: {result.text}"[:1000],
                )
            else:
                values.update(
                    status=DeliveryStatus.DEFERRED,
                    next_attempt_at=moment + timedelta(seconds=self._backoff(reader.attempts)),
                )
        elif result.outcome == Outcome.HARD_BOUNCE:
            values.update(status=DeliveryStatus.BOUNCED)
        else:
            values.update(status=DeliveryStatus.FAILED)
        statement = (
            update(Delivery)
            .where(Delivery.id == reader.delivery_id, Delivery.lease_owner == owner)
            .values(**values)
        )
        if conn is not None and result.outcome != Outcome.HARD_BOUNCE:
            updated = conn.execute(statement).rowcount
            conn.commit()
        else:
            with self.engine.begin() as conn:
                updated = conn.execute(statement).rowcount
                if result.outcome == Outcome.HARD_BOUNCE:
                    suppress_address(
                        conn, reader.email, "hard_bounce", result.text[:200], self.settings
                    )
                    conn.execute(
                        update(Subscriber)
                        .where(Subscriber.id == reader.subscriber_id)
                        .values(status=SubscriberStatus.BOUNCED)
                    )
        if not updated:
            log.warning("delivery %s was reclaimed while being sent", reader.delivery_id)
        if result.outcome in (Outcome.PERMANENT, Outcome.HARD_BOUNCE):
            self._check_error_rate(prepared.edition_id)

    def _check_error_rate(self, edition_id: int) -> None:
        """Pause the edition once permanent failures pass the threshold (a bad list or a
        blocked sender should not burn through a million readers)."""
        # The GROUP BY is not free: run it every few failures seen here, or once a second.
        now = time.monotonic()
        last, failures = self._error_checked.get(edition_id, (0.0, 0))
        if failures + 1 < 5 and now - last < 1.0:
            self._error_checked[edition_id] = (last, failures + 1)
            return
        self._error_checked[edition_id] = (now, 0)
        with self.engine.begin() as conn:
            counts = dict(
                conn.execute(
                    select(Delivery.status, func.count())
                    .where(
                        Delivery.edition_id == edition_id,
                        Delivery.status.in_(
                            [DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.BOUNCED]
                        ),
                    )
                    .group_by(Delivery.status)
                ).all()
            )
            bad = counts.get(DeliveryStatus.FAILED, 0) + counts.get(DeliveryStatus.BOUNCED, 0)
            done = bad + counts.get(DeliveryStatus.SENT, 0)
            threshold = self.settings.error_pause_threshold
            if done < self.settings.error_pause_min_sends or bad <= threshold * done:
                return
            reason = (
                f"paused automatically: {bad} of {done} messages ({bad / done:.1%}) failed "
                f"permanently, over the {threshold:.0%} threshold; check the list or the "
                f"sender's reputation, then resume"
            )
            paused = conn.execute(
                update(Edition)
                .where(Edition.id == edition_id, Edition.status == EditionStatus.SENDING)
                .values(status=EditionStatus.PAUSED, status_reason=reason)
            ).rowcount
        self._self_paused.add(edition_id)
        if paused:
            log.warning("edition %s %s", edition_id, reason)

    def _release(self, delivery_ids: list[int], owner: str) -> None:
        """Give claimed-but-unsent rows back (pause, or an error): not counted as attempts."""
        if not delivery_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.lease_owner == owner,
                    Delivery.status == DeliveryStatus.SENDING,
                )
                .values(
                    status=DeliveryStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=Delivery.attempts - 1,
                )
            )

    def _renew(self, delivery_ids: list[int], owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Delivery)
                .where(Delivery.id.in_(delivery_ids), Delivery.lease_owner == owner)
                .values(
                    lease_expires_at=self.now() + timedelta(seconds=self.settings.lease_seconds)
                )
            )
