"""The admin web UI under ``/admin`` for editors and operators (server-rendered, RTL Arabic).

One module per area, each a small router of :class:`~mailer.admin.core.AdminRoute` routes:
sign-in (:mod:`.signin`), dashboard, stories and alerts, editions, schedules, readers,
suppressions, SMTP servers, API tokens and the sink's outbox. :mod:`.session` holds the signed
session cookie and its CSRF token, :mod:`.core` the role and CSRF checks, :mod:`.views` the
templates (``templates/admin/``). The CSS and the small script live in ``static/`` and are
served from ``/admin/static/`` (no CDN, no network).
"""

import hashlib
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from mailer.admin import (
    dashboard,
    editions,
    outbox,
    readers,
    schedules,
    servers,
    signin,
    stories,
    suppressions,
    tokens,
)
from mailer.admin.core import AdminRoute, Ui
from mailer.admin.session import Sessions
from mailer.api.deps import Api
from mailer.config import Settings
from mailer.csrf import Csrf
from mailer.dispatch import Dispatcher
from mailer.ratelimit import Limiter, load_limiter
from mailer.tokens import Tokens
from mailer.transport import Transport

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
PAGES = (dashboard, stories, editions, schedules, readers, suppressions, servers, tokens, outbox)


def static_router() -> tuple[APIRouter, str]:
    """``GET /static/{name}`` for the files in ``static/`` (read once), and their version."""
    files = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.suffix in _TYPES}
    version = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:12]
    router = APIRouter(route_class=AdminRoute)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> Response:
        if name not in files:
            return Response("not found", status_code=404, media_type="text/plain")
        # The pages link them with ?v=<version>, so a cached copy is never stale.
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return Response(files[name], media_type=_TYPES[Path(name).suffix], headers=headers)

    return router, version


def router(
    settings: Settings,
    engine: Engine,
    *,
    dispatcher: Dispatcher | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    limiter: Limiter | None = None,
) -> APIRouter:
    """Every ``/admin`` page (mounted by :func:`mailer.web.create_app`).

    ``dispatcher`` defaults to ``MAILER_DISPATCHER`` (loaded on first use), test sends go to
    ``MAILER_SMTP_URL`` unless ``transport_factory`` says otherwise, and sign-in attempts are
    counted by ``MAILER_LIMITER``; tests pass their own.
    """
    tokens_ = Tokens(settings)
    ui = Ui(
        settings,
        engine,
        Sessions(settings, engine, tokens_),
        Api(settings, engine, dispatcher, transport_factory),
    )
    statics, version = static_router()
    ui.views.globals["static_version"] = version
    root = APIRouter()
    root.include_router(statics)
    root.include_router(
        signin.routes(ui, Csrf(tokens_), limiter or load_limiter(settings.limiter, settings))
    )
    for module in PAGES:
        root.include_router(module.routes(ui))
    return root


__all__ = ["AdminRoute", "router"]
