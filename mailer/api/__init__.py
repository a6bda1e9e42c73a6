"""The JSON API under ``/api/v1`` (bearer tokens and roles) and ``/metrics``.

One module per area (stories, alerts, editions, schedules, subscribers, suppressions, tokens,
SMTP servers, stats and audit); :mod:`mailer.api.deps` holds the token and role checks and the
shared services; :data:`mailer.auth.MATRIX` says which role may use which area.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from sqlalchemy import Engine

from mailer import metrics
from mailer.api import (
    alerts,
    editions,
    schedules,
    smtp,
    stats,
    stories,
    subscribers,
    suppressions,
    tokens,
)
from mailer.api.deps import AUTH_RESPONSES, Api
from mailer.config import Settings
from mailer.dispatch import Dispatcher
from mailer.transport import Transport

MODULES = (
    stories,
    alerts,
    editions,
    schedules,
    subscribers,
    suppressions,
    tokens,
    smtp,
    stats,
)


def router(
    settings: Settings,
    engine: Engine,
    *,
    dispatcher: Dispatcher | None = None,
    transport_factory: Callable[[], Transport] | None = None,
) -> APIRouter:
    """Every ``/api/v1`` route (mounted with that prefix by :func:`mailer.web.create_app`).

    ``dispatcher`` defaults to ``MAILER_DISPATCHER`` (loaded on first use), ``transport_factory``
    (for test sends) to an SMTP connection to ``MAILER_SMTP_URL``; tests pass their own.
    """
    api = Api(settings, engine, dispatcher, transport_factory)
    root = APIRouter(responses=AUTH_RESPONSES)
    for module in MODULES:
        root.include_router(module.routes(api))
    return root


def metrics_router(settings: Settings, engine: Engine) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format, read from the database per scrape."""
    registry = metrics.make_registry(engine)
    root = APIRouter()

    @root.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    def scrape() -> Response:
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE)

    return root
