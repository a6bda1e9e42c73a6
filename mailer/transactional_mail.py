"""What a transactional message looks like: pure building, no database, no network.

Each kind (``templates/email/<kind>/``) is rendered by Jinja and inlined by premailer once per
renderer (one per process), with markers where per-reader values go: the standard ones of
:mod:`mailer.placeholders` and this module's own :data:`CONFIRM_URL`. Per message the confirm
link is filled in first (HTML-escaped in the HTML part), then :class:`MessageTemplate` builds
the message and personalises the standard markers, exactly as for an edition's reader.

Message-IDs and envelope senders are derived from the row id with ``MAILER_HASH_KEY``, so a
retry keeps its Message-ID and a bounce names its message, never a delivery.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from weakref import WeakKeyDictionary

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.message import MessageSpec, MessageTemplate
from mailer.readers import EVERYTHING
from mailer.rendering import RenderedEmail, Renderer
from mailer.sending import greeting
from mailer.tokens import CONFIRM, PREFERENCES, UNSUBSCRIBE, Tokens

#: This module's own placeholder: the confirm link, filled in before the message is built.
CONFIRM_URL = "confirm_url"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Reader:
    """Who a message is for: plain values, never an ORM object."""

    subscriber_id: int
    email: str
    name: str
    consent_at: datetime | None


def confirm_stamp(consent_at: datetime | None) -> int:
    """Binds a confirm link to one subscription request: a newer request voids older links."""
    if consent_at is None:
        return 0
    return (consent_at - _EPOCH) // timedelta(microseconds=1)  # exact: no float rounding


def confirm_url(settings: Settings, tokens: Tokens, subscriber_id: int, stamp: int) -> str:
    """The link of a confirmation email (valid ``confirm_max_age_days``)."""
    return f"{settings.base_url}/confirm/{tokens.sign_timed(CONFIRM, [subscriber_id, stamp])}"


def _mac(settings: Settings, text: str, length: int) -> str:
    return hmac.new(settings.hash_key.encode(), text.encode(), hashlib.sha256).hexdigest()[:length]


def message_id_for(settings: Settings, message_id: int) -> str:
    """Deterministic per row (a retry keeps it), HMAC'd so it cannot be guessed."""
    return f"<t{message_id}.{_mac(settings, f'tmid:{message_id}', 20)}@{settings.sender_domain}>"


def verp_address(settings: Settings, message_id: int) -> str:
    """Envelope sender naming the message (``bounces+t<id>-<mac>``); never a delivery id."""
    mac = _mac(settings, f"tverp:{message_id}", 12)
    return f"bounces+t{message_id}-{mac}@{settings.envelope_domain}"


def parse_verp(settings: Settings, local_part: str) -> int | None:
    """The message id of a transactional VERP local part, or None (for the bounce intake)."""
    _, _, token = local_part.partition("+")
    ident, _, mac = token.partition("-")
    if not (ident[:1] == "t" and ident[1:].isdigit()):
        return None
    expected = _mac(settings, f"tverp:{ident[1:]}", 12)
    return int(ident[1:]) if hmac.compare_digest(mac, expected) else None


_rendered: WeakKeyDictionary[Renderer, dict[str, RenderedEmail]] = WeakKeyDictionary()
_default_renderer: tuple[Settings, Renderer] | None = None


def default_renderer(settings: Settings) -> Renderer:
    """One renderer per process (per configuration), so each kind is inlined once."""
    global _default_renderer
    if _default_renderer is None or _default_renderer[0] is not settings:
        _default_renderer = (settings, Renderer(settings))
    return _default_renderer[1]


def rendered(renderer: Renderer, kind: str) -> RenderedEmail:
    """The kind's email, inlined once per renderer; per-reader values are still markers."""
    cache = _rendered.setdefault(renderer, {})
    if kind not in cache:
        context = {
            "confirm_url": ph.marker(CONFIRM_URL),
            "confirm_days": renderer.settings.confirm_max_age_days,
        }
        cache[kind] = renderer.render(kind, context)
    return cache[kind]


def build_spec(settings: Settings, email: RenderedEmail, kind: str, link: str) -> MessageSpec:
    """The message of one reader, with this module's marker filled (escaped for HTML)."""
    own = ph.marker(CONFIRM_URL)
    return MessageSpec(
        subject=email.subject,
        html=email.html.replace(own, escape(link)),
        text=email.text.replace(own, link),
        sender=settings.sender,
        reply_to=settings.reply_to or None,
        list_id=settings.list_id,
        kind=kind,  # not "alert" nor "digest": no Auto-Submitted, no Precedence: bulk
        feedback_id=f"{kind}:transactional:{settings.feedback_id_sender}",
    )


def build(
    settings: Settings,
    renderer: Renderer,
    kind: str,
    message_id: int,
    reader: Reader,
    moment: datetime,
    *,
    eightbit: bool,
) -> bytes:
    """The bytes of one message (raises ValueError for a value no retry can fix)."""
    tokens = Tokens(settings)
    sid = reader.subscriber_id
    link = confirm_url(settings, tokens, sid, confirm_stamp(reader.consent_at))
    spec = build_spec(settings, rendered(renderer, kind), kind, link)
    # The confirmation's own link ends everything (it has no edition to be scoped to).
    unsubscribe = tokens.sign(UNSUBSCRIBE, [sid, 0, EVERYTHING])
    return MessageTemplate.build(spec, eightbit=eightbit).personalise(
        {
            ph.TO: reader.email,
            ph.MESSAGE_ID: message_id_for(settings, message_id),
            ph.DATE: format_datetime(moment),
            ph.UNSUBSCRIBE_URL: f"{settings.base_url}/unsubscribe/{unsubscribe}",
            ph.UNSUBSCRIBE_MAILTO: (
                f"mailto:unsubscribe@{settings.envelope_domain}?subject={unsubscribe}"
            ),
            ph.PREFERENCES_URL: f"{settings.base_url}/preferences/{tokens.sign(PREFERENCES, sid)}",
            ph.GREETING: greeting(reader.name),
            ph.EMAIL: reader.email,
        }
    )
