"""Deliverability commands: ``dkim keygen``, ``suppressions list|add|remove|import``,
``smtp status``.

Data lines go through ``typer.echo``, not Rich: a DNS record must not be wrapped at the
terminal's width, and an address or a reason must not be read as Rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from mailer import db
from mailer.addresses import InvalidAddress
from mailer.cli import app, err, fail, settings
from mailer.dkim import generate_keys
from mailer.models import SmtpServer, Subscriber, SubscriberStatus, Suppression, utcnow
from mailer.suppress import (
    SuppressionRow,
    add_suppression,
    count_suppressions,
    hash_for,
    import_suppressions,
    list_suppressions,
    remove_suppression,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)
suppressions_app = typer.Typer(help="Addresses that are never mailed.", no_args_is_help=True)
smtp_app = typer.Typer(help="SMTP servers.", no_args_is_help=True)
app.add_typer(dkim_app, name="dkim")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(smtp_app, name="smtp")


def _emit(as_json: bool, data: Any, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, default=str))
    else:
        for line in lines:
            typer.echo(line)


@contextmanager
def _database() -> Iterator[Connection]:
    """One transaction; a database that was never set up is a clear error, not a traceback."""
    try:
        with db.get_engine().begin() as conn:
            yield conn
    except (OperationalError, ProgrammingError) as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            raise fail("the database is not set up: run `mailer db upgrade` first") from None
        raise


# -- dkim --------------------------------------------------------------------------------


@dkim_app.command("keygen")
def dkim_keygen(
    selector: Annotated[str, typer.Option(help="DNS selector, e.g. 'news2026'.")],
    domain: Annotated[
        str | None, typer.Option(help="Signing domain (default: the From domain).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the key (default: DATA_DIR/dkim).")
    ] = None,
    ed25519: Annotated[
        bool, typer.Option("--ed25519", help="Also an Ed25519 key (RFC 8463).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a 2048-bit RSA key (0600) and print the DNS TXT record(s) to publish.

    The first line is the key file's path.
    """
    s = settings()
    domain = domain or s.dkim_domain or s.sender_domain
    try:
        folder = (out or s.data_dir / "dkim").resolve()
        made = generate_keys(selector, domain, folder, ed25519=ed25519)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    rsa_key = made.keys[0]
    lines = [str(rsa_key.path), "", "Publish in DNS:"]
    lines += [key.record for key in made.keys]
    lines += ["", "Then set:", f"MAILER_DKIM_DOMAIN={made.domain}"]
    lines += [f"MAILER_DKIM_SELECTOR={rsa_key.selector}", f"MAILER_DKIM_KEY_FILE={rsa_key.path}"]
    for key in made.keys[1:]:
        lines += [f"MAILER_DKIM_ED25519_SELECTOR={key.selector}"]
        lines += [f"MAILER_DKIM_ED25519_KEY_FILE={key.path}"]
    data = {
        "domain": made.domain,
        "keys": [
            {
                "selector": key.selector,
                "kind": key.kind,
                "key_file": str(key.path),
                "name": key.name,
                "value": key.value,
                "record": key.record,
            }
            for key in made.keys
        ],
    }
    _emit(as_json, data, lines)


# -- suppressions ------------------------------------------------------------------------


def _as_dict(row: SuppressionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "reason": row.reason,
        "source": row.source,
        "created_at": row.created_at.isoformat(),
    }


@suppressions_app.command("list")
def suppressions_list(
    search: Annotated[str | None, typer.Option(help="Part of the address.")] = None,
    limit: int = 50,
    offset: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Newest first; the first line is the number of matching suppressions."""
    s = settings()
    with _database() as conn:
        total = count_suppressions(conn, search, settings=s)
        rows = list_suppressions(conn, limit, offset, search, settings=s)
    lines = [f"{total} suppressed"] + [
        f"{r.id:>6}  {r.created_at:%Y-%m-%d %H:%M}  {r.reason:<12} {r.email or '(erased)'}"
        + (f"  [{r.source}]" if r.source else "")
        for r in rows
    ]
    _emit(as_json, {"total": total, "suppressions": [_as_dict(r) for r in rows]}, lines)


@suppressions_app.command("add")
def suppressions_add(
    email: str,
    reason: Annotated[str, typer.Option(help="A short label.")] = "manual",
    as_json: JsonOpt = False,
) -> None:
    """Never mail EMAIL again (any case). The first line is the suppression's id."""
    try:
        with _database() as conn:
            row, created = add_suppression(conn, email, settings(), reason=reason, source="cli")
    except InvalidAddress as exc:
        raise fail(f"invalid address {email!r}: {exc}") from None
    except ValueError as exc:
        raise fail(str(exc)) from None
    note = "suppressed" if created else f"already suppressed since {row.created_at:%Y-%m-%d}"
    lines = [str(row.id), f"{note}: {row.email} ({row.reason})"]
    _emit(as_json, _as_dict(row) | {"created": created}, lines)


@suppressions_app.command("remove")
def suppressions_remove(email: str, as_json: JsonOpt = False) -> None:
    """Allow mail to EMAIL again. The reader's own status (e.g. bounced) is not changed."""
    s = settings()
    try:
        with _database() as conn:
            removed = remove_suppression(conn, email, s)
            status = conn.scalar(
                select(Subscriber.status).where(Subscriber.email_hash == hash_for(email, s))
            )
    except InvalidAddress as exc:
        raise fail(f"invalid address {email!r}: {exc}") from None
    if not removed:
        raise fail(f"{email} is not suppressed")
    lines = [f"removed: {email}"]
    if status is not None and status != SubscriberStatus.ACTIVE:
        lines.append(f"the reader stays {status}: they get mail again only once they resubscribe")
    _emit(as_json, {"email": email, "removed": True, "subscriber_status": status}, lines)


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    reason: Annotated[str, typer.Option(help="Label for every address.")] = "import",
    as_json: JsonOpt = False,
) -> None:
    """Suppress every address of FILE: a CSV with an 'email' column, or one per line."""
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.completed} addresses"),
        TimeElapsedColumn(),
        console=err,  # stdout keeps the report only
        disable=as_json,
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=None)
        try:
            with _database() as conn:  # fail early and clearly on a database not set up
                conn.execute(select(Suppression.id).limit(1))
            report = import_suppressions(
                db.get_engine(),
                file,
                settings(),
                reason,
                progress=lambda n: bar.advance(task, n),
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
    data = {
        "read": report.read,
        "added": report.added,
        "existing": report.existing,
        "errors": [{"line": line, "error": e} for line, e in report.errors],
    }
    lines = [
        f"{report.added} added, {report.existing} already suppressed, {len(report.errors)} refused"
    ] + [f"  line {line}: {e}" for line, e in report.errors[:50]]
    if len(report.errors) > 50:
        lines.append(f"  … and {len(report.errors) - 50} more (see --json)")
    _emit(as_json, data, lines)


# -- smtp --------------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (the user name stays: it says which
    account is used)."""
    parts = urlsplit(url.strip())
    if parts.password is None:
        return url.strip()
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _state(enabled: bool, healthy: bool | None, down_until: datetime | None) -> str:
    if not enabled:
        return "disabled"
    if down_until is not None and down_until > utcnow():
        return f"down until {down_until:%Y-%m-%d %H:%M:%S}Z"
    if healthy is None:
        return "not tracked"
    return "healthy" if healthy else "unhealthy"


@smtp_app.command("status")
def smtp_status(as_json: JsonOpt = False) -> None:
    """Every SMTP server and its health; MAILER_SMTP_URL is used when none is enabled."""
    with _database() as conn:
        rows = conn.execute(
            select(
                SmtpServer.name,
                SmtpServer.url,
                SmtpServer.weight,
                SmtpServer.enabled,
                SmtpServer.healthy,
                SmtpServer.down_until,
                SmtpServer.last_error,
            ).order_by(SmtpServer.id)
        ).all()
        servers: list[dict[str, Any]] = [
            {
                "name": r.name,
                "url": redact(r.url),
                "weight": r.weight,
                "enabled": r.enabled,
                "healthy": r.healthy,
                "down_until": r.down_until.isoformat() if r.down_until else None,
                "last_error": r.last_error,
                "state": _state(r.enabled, r.healthy, r.down_until),
                "source": "smtp_servers",
                "in_use": r.enabled,
            }
            for r in rows
        ]
    in_use = not any(server["enabled"] for server in servers)
    default: dict[str, Any] = {
        "name": "default",
        "url": redact(settings().smtp_url),
        "weight": None,
        "enabled": True,
        "healthy": None,  # the pool records health for table rows only
        "down_until": None,
        "last_error": None,
        "state": "in use" if in_use else "standby (servers below are enabled)",
        "source": "MAILER_SMTP_URL",
        "in_use": in_use,
    }
    lines = [f"{'name':<16} {'weight':>6}  {'state':<28} url"]
    for server in [default, *servers]:
        weight = "-" if server["weight"] is None else str(server["weight"])
        lines.append(f"{server['name']:<16} {weight:>6}  {server['state']:<28} {server['url']}")
        if server["last_error"]:
            lines.append(f"{'':<16} {'':>6}  last error: {server['last_error']}")
    _emit(as_json, {"servers": [default, *servers]}, lines)
