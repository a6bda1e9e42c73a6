"""Pruning old deliveries keeps every edition's counts; resend of a paused edition waits for
its resume; the operator commands (tokens, prune, preview, test, resend-failed)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from mailer import cli, db
from mailer.config import get_settings
from mailer.models import ApiToken, AuditEvent, Delivery, DeliveryStatus, Edition, utcnow
from mailer.operations import prune_deliveries, resend_failed
from mailer.sweeper import sweep
from mailer.transport import MemoryTransport, SendResult
from tests.api.conftest import World, copy_database
from tests.api.test_editions import progress, start_alert
from tests.support.smtp_server import ScriptedSMTPServer

LONG_AGO = utcnow() - timedelta(days=120)


def finish(world: World, edition_id: int, when: object = LONG_AGO) -> None:
    with world.engine.begin() as conn:
        conn.execute(update(Edition).where(Edition.id == edition_id).values(finished_at=when))


def rows(world: World, edition_id: int) -> int:
    with Session(world.engine) as session:
        count = select(func.count()).select_from(Delivery).where(Delivery.edition_id == edition_id)
        return int(session.scalar(count) or 0)


def test_prune_removes_old_rows_and_keeps_each_editions_counts(world: World) -> None:
    world.add_readers(10)
    failing = {"reader0002@example.com": SendResult.from_reply(554, "5.7.1 no")}
    sent = start_alert(world)
    world.drain(MemoryTransport(failing))
    cancelled = start_alert(world)
    batches = list(world.dispatcher.sent)
    world.dispatcher.sent.clear()
    world.sender().send_batch(batches[0][1])  # four of ten sent, then cancelled
    assert world.call("POST", f"/editions/{cancelled}/cancel", "operator").status_code == 200
    recent = start_alert(world)
    world.drain()
    running = start_alert(world)  # still sending: never pruned
    sweep(world.engine, world.settings, world.dispatcher)
    world.dispatcher.sent.clear()
    for edition_id in (sent, cancelled, running):
        finish(world, edition_id)
    finish(world, recent, utcnow() - timedelta(days=3))
    shown = {e: progress(world, e)["progress"] for e in (sent, cancelled, recent)}

    removed = prune_deliveries(world.engine, timedelta(days=90), chunk=3)

    assert removed == 20
    assert (rows(world, sent), rows(world, cancelled)) == (0, 0)
    assert (rows(world, recent), rows(world, running)) == (10, 10)
    for edition_id, before in shown.items():  # what an operator sees has not changed
        assert progress(world, edition_id)["progress"] == before
    assert shown[cancelled]["counts"] == {"sent": 4, "cancelled": 6}  # type: ignore[index]
    assert shown[sent]["counts"] == {"sent": 9, "failed": 1}  # type: ignore[index]
    with Session(world.engine) as session:
        edition = session.get(Edition, cancelled)
        assert edition is not None
        assert (edition.total_count, edition.sent_count, edition.cancelled_count) == (10, 4, 6)
    assert prune_deliveries(world.engine, timedelta(days=90)) == 0  # nothing left to do
    # Its failed rows are gone: resending would lose count, so it is refused.
    assert world.call("POST", f"/editions/{sent}/resend-failed", "operator").status_code == 409


def test_prune_leaves_an_edition_with_a_message_in_flight(world: World) -> None:
    world.add_readers(4)
    edition_id = start_alert(world)
    world.call("POST", f"/editions/{edition_id}/cancel", "operator")
    with world.engine.begin() as conn:  # a worker still holds one row when the cancel came
        first = conn.scalar(select(func.min(Delivery.id)).where(Delivery.edition_id == edition_id))
        conn.execute(
            update(Delivery).where(Delivery.id == first).values(status=DeliveryStatus.SENDING)
        )
    finish(world, edition_id)
    assert prune_deliveries(world.engine, timedelta(days=90)) == 0
    assert rows(world, edition_id) == 4


def test_resend_failed_on_a_paused_edition_waits_for_resume(world: World) -> None:
    readers = world.add_readers(8)
    edition_id = start_alert(world)
    batches = list(world.dispatcher.sent)
    world.dispatcher.sent.clear()
    refuse = {readers[0]: SendResult.from_reply(554, "5.7.1 no")}
    world.sender(MemoryTransport(refuse)).send_batch(batches[0][1])
    world.call("POST", f"/editions/{edition_id}/pause", "operator")

    assert resend_failed(world.engine, world.settings, world.dispatcher, edition_id, "t") == 1
    assert world.dispatcher.sent == []  # nothing dispatched while paused
    assert progress(world, edition_id)["status"] == "paused"
    world.call("POST", f"/editions/{edition_id}/resume", "operator")
    second = MemoryTransport()
    world.drain(second)
    assert sorted(r for _, r, _ in second.sent) == sorted(readers[0:1] + readers[4:])


# -- the commands -------------------------------------------------------------------------


@pytest.fixture
def cli_env(
    tmp_path: Path, migrated: Path, monkeypatch: pytest.MonkeyPatch, smtp: ScriptedSMTPServer
) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    copy_database(migrated, tmp_path / "mailer.db")
    monkeypatch.setenv("MAILER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MAILER_DISPATCHER", "mailer.dispatch:NullDispatcher")
    monkeypatch.setenv("MAILER_SECRET_KEYS", "test-secret")
    monkeypatch.setenv("MAILER_HASH_KEY", "test-hash-key")
    monkeypatch.setenv("MAILER_SMTP_URL", f"{smtp.url}?timeout=5")
    reset()
    try:
        yield tmp_path
    finally:
        reset()


def reset() -> None:
    get_settings.cache_clear()
    cli.service.cache_clear()
    db.reset_engine()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def test_tokens_create_prints_the_secret_alone_on_the_first_line(cli_env: Path) -> None:
    secret = ok("tokens", "create", "--role", "editor", "--name", "desk").stdout.splitlines()[0]
    assert secret.startswith("mlr_") and " " not in secret
    with Session(db.get_engine()) as session:
        token = session.scalar(select(ApiToken))
        assert token is not None and (token.role, token.name) == ("editor", "desk")
        assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert session.scalar(select(AuditEvent.action)) == "token.create"
    assert run("tokens", "create", "--role", "root").exit_code != 0


def test_prune_command_parses_ages(cli_env: Path) -> None:
    assert "0 delivery rows removed" in ok("deliveries", "prune", "--older-than", "90d").stdout
    assert '"removed": 0' in ok("deliveries", "prune", "--older-than", "36h", "--json").stdout
    for bad in ("90", "90x", "0d", "-5d"):
        assert run("deliveries", "prune", "--older-than", bad).exit_code == 2, bad


def test_preview_test_and_resend_commands(cli_env: Path, smtp: ScriptedSMTPServer) -> None:
    ok("subscribers", "add", "amal@example.com", "--name", "أمل")
    story = ok(
        "stories", "add", "--title", "عاجل", "--url", "https://n.example.com/1", "--topic", "syria"
    )
    edition = ok("alert", story.stdout.splitlines()[0]).stdout.splitlines()[0]

    text = ok("editions", "preview", edition, "--reader", "amal@example.com").stdout
    assert text.startswith("Subject: ") and "مرحباً أمل،" in text
    assert (
        "<html"
        in ok("editions", "preview", edition, "--reader", "amal@example.com", "--html").stdout
    )
    assert run("editions", "preview", edition, "--reader", "nobody@example.com").exit_code == 1

    sent = ok("editions", "test", edition, "--to", "a@example.net", "--to", "b@example.net")
    assert "a@example.net: sent" in sent.stdout
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == ["a@example.net", "b@example.net"]
    smtp.set_rule(ScriptedSMTPServer.refuse(550, "5.1.1 unknown"))
    assert run("editions", "test", edition, "--to", "c@example.net").exit_code == 1

    with db.get_engine().begin() as conn:
        conn.execute(update(Delivery).values(status=DeliveryStatus.FAILED))
    resent = ok("editions", "resend-failed", edition).stdout.splitlines()
    assert resent == [edition, "1 failed recipients queued again"]
    with Session(db.get_engine()) as session:
        assert session.scalar(select(Delivery.status)) == "queued"
        actions = list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["alert.trigger", "test_send", "test_send", "edition.resend_failed"]
