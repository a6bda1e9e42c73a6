"""Operator commands: API tokens, pruning, edition preview/test/resend (issue "Newsroom side")."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session

from mailer import audit, auth, db, operations
from mailer.addresses import InvalidAddress
from mailer.auth import Role
from mailer.cli import app, console, emit, fail, service, settings
from mailer.cli.commands import JsonOpt, editions_app
from mailer.editions import EditionError
from mailer.transport import SmtpConfig, SmtpTransport

tokens_app = typer.Typer(help="API tokens (bearer tokens of the JSON API).")
deliveries_app = typer.Typer(help="Delivery records.")
app.add_typer(tokens_app, name="tokens")
app.add_typer(deliveries_app, name="deliveries")

_AGE = re.compile(r"^\s*(\d+)\s*([dh])\s*$")


def parse_age(text: str) -> timedelta:
    """``90d`` or ``36h`` → a timedelta (BadParameter otherwise)."""
    match = _AGE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r}: give a number of days or hours, like 90d or 36h")
    amount = int(match.group(1))
    return timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="editor, operator or admin")],
    name: Annotated[str, typer.Option(help="Who or what uses it")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once, alone on the first line."""
    with Session(db.get_engine()) as session:
        try:
            token_id, secret = auth.create_token(session, role, name)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        details = {"role": role.value, "name": name}
        audit.record(session, audit.cli_actor(), "token.create", f"token:{token_id}", details)
        session.commit()
    emit(
        as_json,
        {"id": token_id, "role": role.value, "name": name, "secret": secret},
        [secret, f"token {token_id} ({role.value}): shown once, only its hash is stored"],
    )


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    with Session(db.get_engine()) as session:
        items = [
            {
                "id": t.id,
                "name": t.name,
                "role": t.role,
                "last_used_at": t.last_used_at,
                "revoked": t.revoked_at is not None,
            }
            for t in auth.list_tokens(session)
        ]
    emit(
        as_json,
        items,
        [
            f"{i['id']:>4}  {i['role']:<8} {'revoked ' if i['revoked'] else ''}{i['name']}"
            for i in items
        ],
    )


@tokens_app.command("revoke")
def tokens_revoke(token_id: int) -> None:
    """Revoke a token at once."""
    with Session(db.get_engine()) as session:
        if not auth.revoke_token(session, token_id):
            raise fail(f"no live token with id {token_id}")
        audit.record(session, audit.cli_actor(), "token.revoke", f"token:{token_id}")
        session.commit()
    console.print(f"{token_id}\nrevoked")


@deliveries_app.command("prune")
def deliveries_prune(
    older_than: Annotated[
        str, typer.Option(help="Age of finished editions, e.g. 90d or 36h")
    ] = "90d",
    as_json: JsonOpt = False,
) -> None:
    """Delete delivery rows of editions finished before then; their counts are kept."""
    age = parse_age(older_than)
    with Progress(
        SpinnerColumn(),
        TextColumn("pruning {task.completed} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as bar:
        task = bar.add_task("prune", total=None)
        removed = operations.prune_deliveries(
            db.get_engine(), age, progress=lambda n: bar.advance(task, n)
        )
    with db.get_engine().begin() as conn:
        details = {"older_than": older_than, "removed": removed}
        audit.record(conn, audit.cli_actor(), "deliveries.prune", "deliveries", details)
    emit(
        as_json,
        {"removed": removed},
        [f"{removed} delivery rows removed (their editions keep their counts)"],
    )


@editions_app.command("preview")
def editions_preview(
    edition_id: int,
    reader: Annotated[str, typer.Option(help="The reader's address")],
    html: Annotated[bool, typer.Option("--html", help="The HTML part, not the text")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What one reader would get from this edition: their greeting, their own links."""
    try:
        shown = operations.preview(db.get_engine(), settings(), edition_id, reader)
    except (operations.NotFound, InvalidAddress) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        emit(True, shown._asdict(), [])
        return
    typer.echo(f"Subject: {shown.subject}\n")
    typer.echo(shown.html if html else shown.text)


@editions_app.command("test")
def editions_test(
    edition_id: int,
    to: Annotated[list[str], typer.Option("--to", help="A seed address (repeat for more)")],
    as_json: JsonOpt = False,
) -> None:
    """Send the edition to seed addresses (no deliveries are created; the audit log says so)."""
    s = settings()
    transport = SmtpTransport(SmtpConfig.from_url(s.smtp_url))
    try:
        results = operations.test_send(
            db.get_engine(), s, transport, edition_id, to, audit.cli_actor()
        )
    except (operations.NotFound, ValueError) as exc:
        raise fail(str(exc)) from exc
    finally:
        transport.close()
    emit(
        as_json,
        [r.__dict__ for r in results],
        [f"{r.address}: {r.outcome} ({r.code} {r.text})" for r in results],
    )
    if any(r.outcome != "sent" for r in results):
        raise typer.Exit(1)


@editions_app.command("resend-failed")
def editions_resend_failed(edition_id: int, as_json: JsonOpt = False) -> None:
    """Queue the edition's failed (not bounced) recipients again."""
    try:
        count = operations.resend_failed(
            db.get_engine(), settings(), service().dispatcher, edition_id, audit.cli_actor()
        )
    except (operations.NotFound, EditionError) as exc:
        raise fail(str(exc)) from exc
    emit(
        as_json,
        {"edition_id": edition_id, "requeued": count},
        [str(edition_id), f"{count} failed recipients queued again"],
    )
