"""Inbound mail commands: bounces, complaints and mailto unsubscribes (``mailer inbound …``).

* ``parse FILE…`` prints one JSON line per reported recipient (a bounce usually has one):
  ``file``, ``recipient``, ``kind`` (hard, soft, complaint, auto-reply, not-bounce), ``status``,
  ``reason``, ``verp``. It needs no database; ``-`` reads standard input.
* ``serve`` runs the SMTP intake for the bounce domain until stopped.
* ``poll`` reads the unseen messages of ``MAILER_IMAP_URL`` once, or every ``--interval``
  seconds with ``--loop``.
"""

from __future__ import annotations

import imaplib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mailer import db
from mailer.bounces import parse
from mailer.cli import app, console, fail, settings
from mailer.inbound import imap_target, poll_forever, poll_imap, run_intake

inbound_app = typer.Typer(help="Bounces, complaints and mailto unsubscribes.", no_args_is_help=True)
app.add_typer(inbound_app, name="inbound")


@inbound_app.command("parse")
def inbound_parse(
    files: Annotated[list[Path], typer.Argument(help="Message files (.eml); - for stdin.")],
    envelope_to: Annotated[
        str | None, typer.Option(help="The SMTP envelope recipient, if known (a VERP address).")
    ] = None,
) -> None:
    """Classify messages without touching the database: one JSON line per recipient."""
    for path in files:
        if str(path) == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise fail(f"cannot read {path}: {exc.strerror or exc}") from exc
        for report in parse(data, envelope_to=envelope_to):
            line = {"file": str(path), **report.as_dict()}
            # typer.echo, not Rich: a JSON line must never be wrapped or read as markup.
            typer.echo(json.dumps(line, ensure_ascii=False))


@inbound_app.command("serve")
def inbound_serve(
    host: Annotated[str | None, typer.Option(help="Default: MAILER_INBOUND_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: MAILER_INBOUND_PORT.")] = None,
) -> None:
    """Receive bounces, complaints and mailto unsubscribes over SMTP (until Ctrl-C)."""
    s = settings()
    host = host or s.inbound_host
    port = s.inbound_port if port is None else port
    console.print(
        f"inbound SMTP for @{s.envelope_domain} on {host}:{port} (Ctrl-C stops)", highlight=False
    )
    try:
        run_intake(host, port, db.get_engine(), s)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@inbound_app.command("poll")
def inbound_poll(
    loop: Annotated[bool, typer.Option("--loop", help="Keep polling.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between passes with --loop.")] = 60.0,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete handled messages instead of marking seen.")
    ] = False,
) -> None:
    """Handle the unseen messages of the IMAP mailbox in MAILER_IMAP_URL."""
    s = settings()
    if not s.imap_url:
        raise fail("MAILER_IMAP_URL is not set (e.g. imaps://user:password@imap.example.com/INBOX)")
    try:
        imap_target(s.imap_url)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if loop:
        poll_forever(db.get_engine(), s, interval, delete=delete)
        return
    try:
        count = poll_imap(db.get_engine(), s, delete=delete)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise fail(f"IMAP pass failed: {exc}") from exc
    typer.echo(f"{count} message(s) handled")
