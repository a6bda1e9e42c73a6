"""The figures of one fault run, and every way it could have broken the promises.

"Nothing lost, nothing sent twice, nobody let in" is checked against two independent records:
what the SMTP server accepted (what readers really received) and the ``deliveries`` rows (what
the service believes). :func:`audit` compares them reader by reader and lists each problem in
words a test failure can show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailer.models import Delivery, Edition, Subscriber

FINAL_FAILURES = ("failed", "bounced")


@dataclass
class Figures:
    """One line of the reliability table."""

    fault: str
    backend: str
    injected: int
    expected: int
    delivered: int = 0  # readers with at least one accepted copy
    failed: int = 0  # readers recorded failed (or bounced) with a reason, and not delivered
    lost: int = 0  # readers neither delivered nor failed with a reason
    duplicated: int = 0  # extra copies beyond the first
    allowed: int = 0  # the most duplicates the design allows for this fault
    seconds: float = 0.0
    notes: str = ""
    problems: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)  # scenario-specific figures

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "backend": self.backend,
            "injected": self.injected,
            "expected": self.expected,
            "delivered": self.delivered,
            "failed": self.failed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "allowed": self.allowed,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "ok": self.ok,
            "problems": self.problems,
            "measures": self.measures,
        }


def _sample(items: list[str], limit: int = 5) -> str:
    head = ", ".join(items[:limit])
    return head + (f" … (+{len(items) - limit})" if len(items) > limit else "")


def delivery_rows(engine: Engine, edition_id: int) -> list[Any]:
    with Session(engine) as session:
        return list(
            session.execute(
                select(
                    Subscriber.email,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.last_code,
                    Delivery.last_response,
                    Delivery.message_id,
                    Delivery.lease_owner,
                )
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.edition_id == edition_id)
                .order_by(Delivery.id)
            ).all()
        )


def edition_status(engine: Engine, edition_id: int) -> str:
    with Session(engine) as session:
        return str(session.scalar(select(Edition.status).where(Edition.id == edition_id)))


def audit(
    figures: Figures,
    rows: list[Any],
    received: Counter[str],
    message_ids: Mapping[str, set[str | None]],
    *,
    status: str,
) -> Figures:
    """Fill ``figures`` from the deliveries of one edition and what the server accepted.

    Problems: a reader without a copy and without a recorded failure (lost); a row recorded
    "sent" the server never accepted, or with another Message-ID; copies beyond
    ``figures.allowed``; a duplicate whose copies differ in Message-ID; a copy to an address
    that is not a reader of the edition; a row left open (queued, sending, deferred) or still
    leased; an edition not "sent".
    """
    problems = figures.problems
    readers = {row.email: row for row in rows}
    if len(rows) != figures.expected:
        problems.append(f"{len(rows)} deliveries planned for {figures.expected} readers")
    strangers = sorted(set(received) - set(readers))
    if strangers:
        problems.append(f"messages to addresses outside the edition: {_sample(strangers)}")

    lost, phantom, reasonless, wrong_id, open_rows, leased = [], [], [], [], [], []
    for email, row in readers.items():
        copies = received.get(email, 0)
        if row.lease_owner is not None:
            leased.append(email)
        if row.status == "sent":
            ids = message_ids.get(email, set())
            if not copies:
                phantom.append(email)
            elif ids != {row.message_id}:
                wrong_id.append(
                    f"{email}: recorded {row.message_id}, received {sorted(map(str, ids))}"
                )
        elif row.status in FINAL_FAILURES:
            if not (row.last_response or "").strip():
                reasonless.append(email)
        else:
            open_rows.append(f"{email} ({row.status})")
        if copies:
            figures.delivered += 1
        elif row.status in FINAL_FAILURES and (row.last_response or "").strip():
            figures.failed += 1
        else:
            lost.append(email)
    figures.lost = len(lost)
    if lost:
        problems.append(f"{len(lost)} readers lost (no copy, no recorded failure): {_sample(lost)}")
    if phantom:
        problems.append(
            f"{len(phantom)} rows recorded sent that the server never accepted: {_sample(phantom)}"
        )
    if wrong_id:
        problems.append(f"Message-ID recorded differs from the one received: {_sample(wrong_id)}")
    if reasonless:
        problems.append(f"{len(reasonless)} failed rows without a reason: {_sample(reasonless)}")
    if open_rows:
        problems.append(f"{len(open_rows)} rows left open: {_sample(open_rows)}")
    if leased:
        problems.append(f"{len(leased)} rows still hold a lease (stuck): {_sample(leased)}")

    extra = {email: n - 1 for email, n in received.items() if n > 1}
    figures.duplicated = sum(extra.values())
    if figures.duplicated > figures.allowed:
        problems.append(
            f"{figures.duplicated} duplicate copies, more than the {figures.allowed} allowed: "
            f"{_sample(sorted(extra))}"
        )
    mixed = [email for email in extra if len(message_ids.get(email, set())) != 1]
    if mixed:
        problems.append(f"duplicates with different Message-IDs: {_sample(mixed)}")
    if status != "sent":
        problems.append(f"edition ended {status!r}, not 'sent'")
    return figures
