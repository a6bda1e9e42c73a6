"""Outbox (operators): the messages the built-in SMTP sink received, in the embedded default.

Every ``<sink_dir>/*.eml`` (with its ``.json`` envelope, :mod:`mailer.sink`) is listed newest
first and shown rendered (its HTML part in a sandboxed frame: no script, no forms, its own
origin), as text, with its headers, and as raw source, so a newcomer sees the emails without
any mail client. Only names the sink itself makes are accepted in URLs, so no path can leave
the sink folder.
"""

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from mailer.admin.core import AdminRoute, Ui
from mailer.admin.session import AdminUser
from mailer.admin.views import EMAIL_HEADERS, HEADERS
from mailer.auth import Area
from mailer.sink import list_messages, read_envelope

PAGE = 100
#: A search reads headers of at most this many of the newest messages (the sink is for looking).
SEARCH_WINDOW = 5000
_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}")


@dataclass(frozen=True)
class Listed:
    name: str
    subject: str
    sender: str
    to: str
    received: str


def headers_of(path: Path) -> Listed:
    with path.open("rb") as handle:
        found = BytesHeaderParser(policy=email.policy.default).parse(handle)
    try:
        received = str(read_envelope(path).get("received_at", ""))
    except (OSError, ValueError):
        received = ""
    return Listed(
        path.stem,
        str(found.get("Subject", "")),
        str(found.get("From", "")),
        str(found.get("To", "")),
        received,
    )


def part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    if body is None:
        return ""
    try:
        return str(body.get_content())
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        payload = body.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Operator = Annotated[AdminUser, Depends(ui.viewer(Area.EDITIONS))]

    def stored(request: Request, name: str) -> Path:
        path = ui.settings.sink_dir / f"{name}.eml"
        if not _NAME.fullmatch(name) or not path.is_file():
            raise ui.not_found(request, "هذه الرسالة في صندوق الصادر")
        return path

    @router.get("/outbox", include_in_schema=False)
    def outbox_page(request: Request, user: Operator) -> Response:
        q = request.query_params.get("q", "").strip().casefold()
        offset_text = request.query_params.get("offset", "0")
        offset = int(offset_text) if offset_text.isdigit() else 0
        paths = list(reversed(list_messages(ui.settings.sink_dir)))
        total = len(paths)
        if q:
            listed = [headers_of(p) for p in paths[:SEARCH_WINDOW]]
            matches = [m for m in listed if q in f"{m.subject} {m.to} {m.sender}".casefold()]
            total, shown = len(matches), matches[offset : offset + PAGE]
        else:
            shown = [headers_of(p) for p in paths[offset : offset + PAGE]]
        context: dict[str, Any] = {
            "title": "صندوق الصادر",
            "messages": shown,
            "total": total,
            "q": request.query_params.get("q", ""),
            "more": offset + PAGE if offset + PAGE < total else None,
            "sink_dir": str(ui.settings.sink_dir),
        }
        return ui.views.render(request, "outbox", context)

    @router.get("/outbox/{name}", include_in_schema=False)
    def message_page(request: Request, name: str, user: Operator) -> Response:
        path = stored(request, name)
        raw = path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        try:
            envelope = read_envelope(path)
        except (OSError, ValueError):
            envelope = {}
        context = {
            "title": str(message.get("Subject", "")) or "رسالة بلا عنوان",
            "name": name,
            "headers": [(k, str(v)) for k, v in message.items()],
            "envelope": envelope,
            "has_html": message.get_body(("html",)) is not None,
            "text": part(message, "plain"),
            "raw": raw.decode("utf-8", "replace"),
        }
        return ui.views.render(request, "outbox_message", context)

    @router.get("/outbox/{name}/body.html", include_in_schema=False)
    def message_html(request: Request, name: str, user: Operator) -> Response:
        message = email.message_from_bytes(
            stored(request, name).read_bytes(), policy=email.policy.default
        )
        assert isinstance(message, EmailMessage)
        return HTMLResponse(part(message, "html"), headers=EMAIL_HEADERS)

    @router.get("/outbox/{name}/raw", include_in_schema=False)
    def message_raw(request: Request, name: str, user: Operator) -> Response:
        data = stored(request, name).read_bytes()
        headers = HEADERS | {"Content-Disposition": f'inline; filename="{name}.eml"'}
        return PlainTextResponse(data.decode("utf-8", "replace"), headers=headers)

    return router
