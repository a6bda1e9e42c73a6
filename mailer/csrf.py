"""CSRF protection for the reader forms: a signed double-submit token.

A form page sets a cookie holding a random seed and puts, in a hidden field, the seed signed
with ``MAILER_SECRET_KEYS`` (purpose ``csrf``, timed). A POST is accepted only when the field's
signature verifies and its seed equals the cookie. Another site can make a browser send the
cookie but can neither read it nor sign a seed; a cookie planted from a sibling subdomain is
useless without a field signed for it.

The RFC 8058 one-click POST is the exception: mail clients send it without cookies, and the
signed token in its URL is what authenticates it.
"""

from __future__ import annotations

import hmac
import re
import secrets

from mailer.tokens import BadToken, Tokens

PURPOSE = "csrf"
COOKIE = "mailer_csrf"
FIELD = "csrf_token"
#: A form left open this long must be reloaded (its field expires).
MAX_AGE = 24 * 3600
_SEED = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class Csrf:
    """Issues and checks the (cookie, field) pair of one deployment."""

    def __init__(self, tokens: Tokens, *, max_age: int = MAX_AGE) -> None:
        self._tokens = tokens
        self._max_age = max_age

    def issue(self, cookie: str | None) -> tuple[str, str]:
        """(seed for the cookie, signed value for the hidden field).

        A well-formed seed already in the browser is kept, so several open tabs stay valid.
        """
        seed = cookie if cookie and _SEED.fullmatch(cookie) else secrets.token_urlsafe(32)
        return seed, self._tokens.sign_timed(PURPOSE, seed)

    def verify(self, cookie: str | None, field: str | None) -> bool:
        """Whether a POST's cookie and field belong together (and the field is fresh)."""
        if not cookie or not field:
            return False
        try:
            seed = self._tokens.verify_timed(PURPOSE, field, self._max_age)
        except BadToken:
            return False
        return isinstance(seed, str) and hmac.compare_digest(seed.encode(), cookie.encode())
