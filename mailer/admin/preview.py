"""Email previews: an edition as one of its readers gets it, or with sample values.

An edition that has readers is previewed through :func:`mailer.operations.preview`, i.e. the
real sender's personalisation for its first reader (or a reader the operator names). A draft
(an alert not sent yet) or an edition without readers shows its rendered HTML with the
per-reader markers replaced by harmless sample values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from mailer import operations, placeholders
from mailer.config import Settings
from mailer.models import Delivery, Edition, Subscriber
from mailer.sending import greeting

SAMPLE_ADDRESS = "reader@example.com"
_SAMPLES = {
    placeholders.GREETING: greeting(""),
    placeholders.EMAIL: SAMPLE_ADDRESS,
    placeholders.UNSUBSCRIBE_URL: "#",
    placeholders.PREFERENCES_URL: "#",
}


def sample_html(html: str) -> str:
    """``html`` with every per-reader marker replaced by a sample value."""
    return placeholders.PATTERN.sub(lambda m: _SAMPLES.get(m.group(1), ""), html)


@dataclass(frozen=True)
class Shown:
    subject: str
    html: str
    text: str
    reader: str  # whose copy it is ("" for sample values)


def first_reader(session: Session, edition_id: int) -> str | None:
    """The address of the edition's first reader that still has one."""
    return session.scalar(
        select(Subscriber.email)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(Delivery.edition_id == edition_id, Subscriber.email.is_not(None))
        .order_by(Delivery.id)
        .limit(1)
    )


def edition_preview(
    engine: Engine, settings: Settings, edition: Edition, reader: str | None = None
) -> Shown:
    """What ``reader`` (default: the first one) gets; sample values if there is nobody."""
    with Session(engine) as session:
        address = reader or first_reader(session, edition.id)
    if address:
        try:
            shown = operations.preview(engine, settings, edition.id, address)
            return Shown(shown.subject, shown.html, shown.text, address)
        except operations.NotFound:
            if reader:  # the operator asked for this one: say so rather than show another
                raise
    text = placeholders.PATTERN.sub(lambda m: _SAMPLES.get(m.group(1), ""), edition.text)
    return Shown(edition.subject, sample_html(edition.html), text, "")
