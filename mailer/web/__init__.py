"""The web application (FastAPI): reader pages, JSON API, admin UI, health and metrics."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError

from mailer import admin, api, db
from mailer.config import Settings, get_settings
from mailer.web import readers


def broker_reachable(settings: Settings) -> bool:
    """The broker answers (Redis: a PING over a plain socket; embedded: its folder exists)."""
    if settings.broker_is_embedded:
        return settings.broker_dir.is_dir()
    parts = urlsplit(settings.broker)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as s:
            if parts.password:
                s.sendall(f"AUTH {parts.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app factory; tests pass their own settings (and so their own database)."""
    production = settings is None
    settings = settings or get_settings()
    engine = db.make_engine(
        settings.database,
        fast_commit=production,
        pool_size=settings.database_pool_size,
        ping_after_idle=1.0,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The limiter belongs to the event loop, so it is set once the loop runs.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.web_threads
        yield
        engine.dispose()

    app = FastAPI(
        title="mailer", summary="Newsletter and breaking-news delivery", lifespan=lifespan
    )

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)  # SQLite's driver, for an integer past 64 bits
    async def value_out_of_range(request: Request, exc: Exception) -> JSONResponse:
        """A value the database cannot store (a NUL in text on PostgreSQL, an id past BIGINT):
        the client's input, so a 422 that says so, never a 500."""
        detail = [
            {
                "loc": ["request"],
                "msg": "a value is out of range or not storable",
                "type": "value_error",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, bool]:
        """Database and broker reachable (used by the compose health checks)."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        broker = broker_reachable(settings)
        if not (database and broker):
            response.status_code = 503
        return {"database": database, "broker": broker}

    app.include_router(readers.router(settings, engine))
    app.include_router(api.router(settings, engine), prefix="/api/v1")
    app.include_router(api.metrics_router(settings, engine))
    app.include_router(admin.router(settings, engine), prefix="/admin")
    return app
