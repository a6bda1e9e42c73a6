"""Per-reader placeholders: the contract between rendering, message building and sending.

An edition is rendered and inlined once with these markers where per-reader values go; the
message builder splits the encoded bytes on them once, and each reader's copy is a join.

A marker is ``__MLR_<name>__``: letters, digits and underscores only, so it passes unchanged
through Jinja autoescaping, premailer/lxml (which percent-encode ``{{…}}`` inside ``href``),
HTML serialisation, URL quoting and quoted-printable encoding.
"""

from __future__ import annotations

import re
from typing import Final

PREFIX: Final = "__MLR_"
SUFFIX: Final = "__"

#: Values that go into the body (HTML-escaped in the HTML part, raw in the text part).
GREETING: Final = "greeting"
EMAIL: Final = "email"
UNSUBSCRIBE_URL: Final = "unsubscribe_url"
PREFERENCES_URL: Final = "preferences_url"
#: Values that go into headers only (already validated: no CR, LF or NUL).
TO: Final = "to"
MESSAGE_ID: Final = "message_id"
DATE: Final = "date"
UNSUBSCRIBE_MAILTO: Final = "unsubscribe_mailto"

BODY_NAMES: Final = (GREETING, EMAIL, UNSUBSCRIBE_URL, PREFERENCES_URL)
HEADER_NAMES: Final = (TO, MESSAGE_ID, DATE, UNSUBSCRIBE_URL, UNSUBSCRIBE_MAILTO)

PATTERN: Final = re.compile(r"__MLR_([a-z_]+?)__")


def marker(name: str) -> str:
    """The literal marker for ``name``, as it appears in templates and rendered output."""
    return f"{PREFIX}{name}{SUFFIX}"
