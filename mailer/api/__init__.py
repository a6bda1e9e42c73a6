"""The JSON API under ``/api/v1`` (bearer tokens and roles) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import Engine

from mailer.config import Settings


def router(settings: Settings, engine: Engine) -> APIRouter:
    """Every ``/api/v1`` route (mounted with that prefix by :func:`mailer.web.create_app`)."""
    return APIRouter()


def metrics_router(settings: Settings, engine: Engine) -> APIRouter:
    """``GET /metrics`` in the Prometheus text format."""
    return APIRouter()
