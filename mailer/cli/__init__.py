"""The ``mailer`` command line (Typer + Rich).

Commands that create something print its id on the first line (scripts rely on it);
``--json`` gives machine-readable output.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import typer
from rich.console import Console

from mailer import db
from mailer.config import Settings, get_settings
from mailer.dispatch import load_dispatcher
from mailer.rendering import Renderer
from mailer.service import Service

app = typer.Typer(help="Newsletter and breaking-news delivery.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def settings() -> Settings:
    return get_settings()


@lru_cache(maxsize=1)
def service() -> Service:
    s = settings()
    return Service(db.get_engine(), s, load_dispatcher(s.dispatcher), Renderer(s))


def emit(as_json: bool, data: Any, lines: list[str]) -> None:
    """Print ``data`` as JSON, or the human lines (the first one carries the id)."""
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        for line in lines:
            console.print(line, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


from mailer.cli import (  # noqa: E402,F401  (register the commands)
    admin,
    commands,
    deliverability,
    inbound,
    newsroom,
    operations,
    run,
)
