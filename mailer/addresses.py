"""Email address validation and normalisation (DESIGN §3, §4, §7).

Every address that enters the service — a subscribe form, a CSV import, a suppression, an API
call — goes through :func:`normalise` before it is stored or put in a header. It accepts one bare
address (``local@domain``) and nothing else: no display name, no angle brackets, no list, no
quoted local part, no comments. ``email.utils.parseaddr`` is never used: on Python 3.11.7 it
parses ``alice@example.org)<bob@example.org>``-style input into a different address than the one
a human reads (CVE-2023-27043).

The stored form keeps the local part as given (Unicode NFC) and puts the domain in lower-case
IDNA ASCII (``user@xn--mgbh0fb.xn--wgbh1c`` for ``user@مثال.مصر``), so only a non-ASCII local
part needs SMTPUTF8. :attr:`Address.key` is the case-folded form that uniqueness and
suppression hashes use.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

__all__ = ["Address", "InvalidAddress", "address_hash", "normalise"]

# RFC 5321 §4.5.3.1 limits, counted in octets (RFC 6531 §3.3 keeps them for UTF-8 addresses).
# email-validator counts the local part in characters, so an Arabic local part of 40 letters
# (80 octets) would pass it and then be refused by the receiving server.
LOCAL_PART_MAX_OCTETS = 64
ADDRESS_MAX_OCTETS = 254

# Every character ``str.splitlines`` breaks on, and NUL: any of them in a header value is a
# header-injection attempt, so they are refused anywhere in the input, also at its ends.
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")


class InvalidAddress(ValueError):
    """The input is not one valid email address; the message says why, in English."""


@dataclass(frozen=True)
class Address:
    """A validated, normalised email address."""

    email: str
    """Local part as given (NFC), ``@``, domain lower-cased in IDNA ASCII form."""
    needs_smtputf8: bool
    """The local part is not ASCII: sending needs a server that offers SMTPUTF8."""

    @property
    def key(self) -> str:
        """The case-insensitive form used for uniqueness and suppression hashes."""
        return unicodedata.normalize("NFC", self.email.casefold())


def normalise(raw: str, *, check_deliverability: bool = False) -> Address:
    """Validate one bare address and return its normalised form.

    Surrounding spaces are stripped; nothing else is repaired. ``check_deliverability`` asks
    DNS whether the domain accepts mail (off by default: tests and imports run without DNS).
    Raises :class:`InvalidAddress` with a human-readable reason.
    """
    if any(c in _LINE_BREAKS for c in raw):
        raise InvalidAddress("The email address must not contain line breaks or NUL characters.")
    text = raw.strip()
    # Clear messages for the shapes of input that smuggle in a second address; email-validator
    # refuses them too, but in terms of "invalid characters".
    if "," in text or ";" in text:
        raise InvalidAddress("Only one email address is allowed.")
    if "<" in text or ">" in text:
        raise InvalidAddress("A display name or angle brackets are not allowed, only the address.")
    if '"' in text:
        raise InvalidAddress("Quotes are not allowed in an email address.")
    if "=?" in text:
        # RFC 2047 encoded words decode to other addresses in some mail readers.
        raise InvalidAddress("Encoded words (=?…?=) are not allowed in an email address.")
    try:
        # Every permissive option is spelled out so that changing email-validator's module-level
        # defaults elsewhere cannot loosen what is accepted here.
        valid = validate_email(
            text,
            check_deliverability=check_deliverability,
            allow_smtputf8=True,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_empty_local=False,
            strict=True,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc

    local = valid.local_part
    email = f"{local}@{valid.ascii_domain}"
    if len(local.encode()) > LOCAL_PART_MAX_OCTETS:
        raise InvalidAddress(
            f"The part before the @-sign is too long (at most {LOCAL_PART_MAX_OCTETS} bytes)."
        )
    if len(email.encode()) > ADDRESS_MAX_OCTETS:
        raise InvalidAddress(f"The email address is too long (at most {ADDRESS_MAX_OCTETS} bytes).")
    return Address(email=email, needs_smtputf8=not local.isascii())


def address_hash(key: str, hash_key: str) -> str:
    """Hex HMAC-SHA256 of an address key: stable across erasure, useless without ``hash_key``."""
    return hmac.new(hash_key.encode(), key.encode(), hashlib.sha256).hexdigest()


_NAME_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean_name(name: str) -> str:
    """A reader's name as one line of text (controls become spaces), at most 200 characters."""
    return " ".join(_NAME_CONTROL.sub(" ", name).split())[:200]
