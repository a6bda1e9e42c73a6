"""The admin web UI under ``/admin`` for editors and operators (server-rendered, RTL)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import Engine

from mailer.config import Settings


def router(settings: Settings, engine: Engine) -> APIRouter:
    """Every ``/admin`` page (mounted by :func:`mailer.web.create_app`)."""
    return APIRouter()
