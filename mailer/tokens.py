"""Signed tokens and keyed hashes.

Links in sent emails must keep working when keys rotate: ``MAILER_SECRET_KEYS`` lists keys
newest first; tokens are signed with the newest and accepted with any. Message-IDs and VERP
tokens use ``MAILER_HASH_KEY``, which never rotates, so a retry after a rotation still carries
the same Message-ID.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from mailer.config import Settings

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"
CONFIRM = "confirm"


class BadToken(ValueError):
    """A token that is tampered with, for another purpose, or unknown to every key."""


class ExpiredToken(BadToken):
    """A well-signed token past its lifetime."""


class Tokens:
    """Every signing operation of the service, bound to one configuration."""

    def __init__(self, settings: Settings) -> None:
        # itsdangerous signs with the *last* key of the list and accepts all of them.
        self._keys = list(reversed(settings.keys))
        self._hash_key = settings.hash_key.encode()
        self._domain = settings.sender_domain
        self._envelope_domain = settings.envelope_domain
        self._plain: dict[str, URLSafeSerializer] = {}
        self._timed: dict[str, URLSafeTimedSerializer] = {}

    def _serializer(self, purpose: str) -> URLSafeSerializer:
        if purpose not in self._plain:
            self._plain[purpose] = URLSafeSerializer(self._keys, salt=purpose)
        return self._plain[purpose]

    def _timed_serializer(self, purpose: str) -> URLSafeTimedSerializer:
        if purpose not in self._timed:
            self._timed[purpose] = URLSafeTimedSerializer(self._keys, salt=purpose)
        return self._timed[purpose]

    def sign(self, purpose: str, payload: Any) -> str:
        """A URL-safe token for ``payload`` that only verifies for ``purpose``."""
        return str(self._serializer(purpose).dumps(payload))

    def verify(self, purpose: str, token: str) -> Any:
        try:
            return self._serializer(purpose).loads(token)
        except BadSignature as exc:
            raise BadToken(str(exc)) from exc

    def sign_timed(self, purpose: str, payload: Any) -> str:
        return str(self._timed_serializer(purpose).dumps(payload))

    def verify_timed(self, purpose: str, token: str, max_age: int) -> Any:
        try:
            return self._timed_serializer(purpose).loads(token, max_age=max_age)
        except SignatureExpired as exc:
            raise ExpiredToken(str(exc)) from exc
        except BadSignature as exc:
            raise BadToken(str(exc)) from exc

    def _mac(self, text: str, length: int) -> str:
        return hmac.new(self._hash_key, text.encode(), hashlib.sha256).hexdigest()[:length]

    def message_id(self, edition_id: int, subscriber_id: int) -> str:
        """Deterministic per (edition, reader), with an HMAC so it cannot be guessed."""
        core = f"{edition_id}.{subscriber_id}"
        return f"<{core}.{self._mac('mid:' + core, 20)}@{self._domain}>"

    def verp_address(self, delivery_id: int) -> str:
        """Envelope sender naming the delivery, so a bounce maps back to it (unforgeably)."""
        mac = self._mac(f"verp:{delivery_id}", 12)
        return f"bounces+{delivery_id}-{mac}@{self._envelope_domain}"

    def parse_verp(self, local_part: str) -> int | None:
        """The delivery id of a VERP local part, or None if it is not one of ours."""
        _, _, token = local_part.partition("+")
        ident, _, mac = token.partition("-")
        if not ident.isdigit() or not hmac.compare_digest(mac, self._mac(f"verp:{ident}", 12)):
            return None
        return int(ident)
