"""Bounces, complaints and mailto unsubscribes applied to a real SQLite database.

An alert is planned by :class:`Service` and sent by :class:`EditionSender` over a
:class:`MemoryTransport`, which captures each message's real VERP envelope sender. The bounces
fed back are corpus files (tests/fixtures/bounces/) as servers wrote them, with their recipient
and VERP address swapped for the reader's and the delivery's own.
"""

from __future__ import annotations

import json
import re
import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from mailer import cli, db
from mailer.config import get_settings
from mailer.db import make_engine
from mailer.inbound import handle_message, poll_imap, start_intake
from mailer.models import Subscriber, Subscription
from mailer.tokens import Tokens
from mailer.transport import MemoryTransport
from tests.support.world import World, make_world, migrated_template

__all__ = ["migrated_template"]

CORPUS = Path(__file__).parent.parent / "fixtures" / "bounces"
# The VERP address and failed recipient each hand-written sample was made with.
SAMPLES = {
    "own-sendmail-verp.eml": (
        "bounces+4242-05c51efab6f5@bounces.alakhbar.example",
        "omar.farouk@example.net",
    ),
    "own-exchange-ar-verp.eml": (
        "bounces+4242-05c51efab6f5@bounces.alakhbar.example",
        "reader.one@outlook.example",
    ),
    "own-gmail-ar.eml": (
        "bounces+4244-a396459b5d52@bounces.alakhbar.example",
        "khaled.omar@example.com.sa",
    ),
    "own-postfix-ar-global-dsn.eml": (
        "bounces+4243-d51b48e702ce@bounces.alakhbar.example",
        "mona.hassan@mail.example.eg",
    ),
    "own-exim-ar-mailbox-full.eml": (
        "bounces+4245-ad0687ff1e57@bounces.alakhbar.example",
        "fatima@host.example.sa",
    ),
    "own-arf-ar.eml": (
        "bounces+4246-6ac7aee1f159@bounces.alakhbar.example",
        "layla.k@mail.example.ae",
    ),
}


@dataclass
class Sent:
    """An alert sent to some readers: who got which VERP address, and the messages."""

    edition_id: int
    readers: list[str]
    verp: dict[str, str]
    data: dict[str, bytes]


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template)


def send_alert(world: World, count: int = 3, *, topics: tuple[str, ...] = ("breaking",)) -> Sent:
    """Add ``count`` readers and send an alert (to them and to every earlier reader)."""
    readers = world.add_readers(count, topics=topics, start=_next_reader(world))
    started = world.service.trigger_alert(world.add_story())
    transport = MemoryTransport()
    world.drain(world.sender(transport))
    assert set(readers) <= {r for _, r, _ in transport.sent}  # and earlier readers still there
    return Sent(
        started.edition_id,
        readers,
        {rcpt: sender for sender, rcpt, _ in transport.sent},
        {rcpt: data for _, rcpt, data in transport.sent},
    )


def _next_reader(world: World) -> int:
    with world.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Subscriber)) or 0) + 1


def bounce(name: str, verp: str | None, recipient: str) -> bytes:
    """A corpus bounce about ``recipient``, addressed to ``verp`` (or to no VERP at all)."""
    data = (CORPUS / name).read_bytes()
    old_verp, old_recipient = SAMPLES[name]
    data = data.replace(old_verp.encode(), (verp or "news@alakhbar.example").encode())
    return data.replace(old_recipient.encode(), recipient.encode())


def _subscriber(world: World, email: str) -> Any:
    with world.engine.connect() as conn:
        return conn.execute(
            select(
                Subscriber.id,
                Subscriber.status,
                Subscriber.bounce_score,
                Subscriber.bounce_score_at,
            ).where(Subscriber.email == email)
        ).one()


def at(moment: datetime, *, days: float = 0) -> Callable[[], datetime]:
    """A clock stopped at ``moment`` plus ``days``."""
    stopped = moment + timedelta(days=days)
    return lambda: stopped


def suppressed(world: World) -> dict[str, str]:
    return {s.email or "": s.reason for s in world.suppressions()}


def subscriptions(world: World, email: str) -> int:
    with world.engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(Subscription)
                .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                .where(Subscriber.email == email)
            )
            or 0
        )


def unchanged(world: World, sent: Sent) -> None:
    """Nothing a bounce could change has changed for any reader of ``sent``."""
    assert suppressed(world) == {}
    for email in sent.readers:
        found = _subscriber(world, email)
        assert (found.status, found.bounce_score) == ("active", 0.0)
        assert subscriptions(world, email) == 1
    assert {d.status for d in world.deliveries(sent.edition_id)} == {"sent"}


# -- hard bounces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "via_envelope"),
    [
        ("own-sendmail-verp.eml", False),  # VERP in To/Delivered-To (the IMAP case)
        ("own-exchange-ar-verp.eml", False),
        ("own-gmail-ar.eml", True),
        ("own-postfix-ar-global-dsn.eml", True),  # a soft report for another address too
        ("lhost-postfix-01.eml", True),  # a real Postfix DSN naming an alias of the reader
        ("lhost-exim-02.eml", True),  # two failed addresses, one delivery: applied once
    ],
)
def test_a_hard_bounce_to_our_verp_bounces_that_delivery_suppresses_and_the_next_plan_skips(
    world: World, name: str, via_envelope: bool
) -> None:
    sent = send_alert(world)
    target = sent.readers[1]
    verp = sent.verp[target]
    real = (CORPUS / name).read_bytes()
    data = bounce(name, verp, target) if name in SAMPLES else real
    applied = handle_message(
        world.engine, world.settings, data, envelope_to=verp if via_envelope else None
    )

    acted = [a for a in applied if not a.action.startswith("ignored")]
    assert [a.action for a in acted] == ["suppressed"]
    deliveries = world.by_email(sent.edition_id)
    assert acted[0].delivery_id == deliveries[target].id
    assert {e: d.status for e, d in deliveries.items()} == {
        e: "bounced" if e == target else "sent" for e in sent.readers
    }
    assert deliveries[target].last_response
    assert suppressed(world) == {target: "hard_bounce"}
    assert world.subscriber_status(target) == "bounced"

    following = send_alert(world, 0)
    assert sorted(following.verp) == sorted(set(sent.readers) - {target})


def test_a_forged_verp_token_changes_nothing_even_when_the_bounce_names_the_reader(
    world: World,
) -> None:
    sent = send_alert(world)
    target = sent.readers[0]
    genuine = sent.verp[target]
    local, _, domain = genuine.partition("@")
    forged = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"  # one hex digit off
    other_id = f"bounces+{int(local.split('+')[1].split('-')[0]) + 1}-{local.rsplit('-', 1)[1]}"

    for verp in (forged, f"{other_id}@{domain}"):
        applied = handle_message(
            world.engine,
            world.settings,
            bounce("own-sendmail-verp.eml", verp, target),
            envelope_to=verp,
        )
        assert [a.action for a in applied] == ["ignored:forged or unknown VERP token"]
        assert applied[0].delivery_id is None
    unchanged(world, sent)


def test_without_verp_a_hard_bounce_falls_back_to_the_named_address_but_a_soft_one_does_not(
    world: World,
) -> None:
    sent = send_alert(world)
    hard, soft = sent.readers[0], sent.readers[1]
    [applied] = handle_message(
        world.engine,
        world.settings,
        bounce("own-exim-ar-mailbox-full.eml", None, soft),
        envelope_to=None,
    )
    assert applied.action == "ignored:soft bounce without our VERP address"
    [applied] = handle_message(
        world.engine, world.settings, bounce("own-sendmail-verp.eml", None, hard), envelope_to=None
    )
    assert (applied.action, applied.delivery_id) == ("suppressed", None)
    assert suppressed(world) == {hard: "hard_bounce"}
    assert _subscriber(world, soft).bounce_score == 0.0
    # Only readers of ours: a bounce naming a stranger suppresses nobody.
    [applied] = handle_message(
        world.engine,
        world.settings,
        bounce("own-sendmail-verp.eml", None, "stranger@example.net"),
        envelope_to=None,
    )
    assert applied.action == "ignored:unknown recipient"
    assert suppressed(world) == {hard: "hard_bounce"}


# -- soft bounces ------------------------------------------------------------------------------


def test_soft_bounces_on_five_days_within_the_expiry_suppress(world: World) -> None:
    sent = send_alert(world)
    target = sent.readers[2]
    verp = sent.verp[target]
    data = bounce("own-exim-ar-mailbox-full.eml", verp, target)
    start = world.clock()

    def on(moment: datetime) -> list[str]:
        applied = handle_message(
            world.engine, world.settings, data, envelope_to=verp, now=at(moment)
        )
        return [a.action for a in applied]

    for day in range(4):
        assert on(start + timedelta(days=day, hours=1)) == ["scored"]
        # Another bounce the same day (a second alert, a duplicate DSN) does not count again.
        assert on(start + timedelta(days=day, hours=5)) == ["ignored:already scored today"]
        found = _subscriber(world, target)
        assert (found.status, found.bounce_score) == ("active", day + 1.0)
        assert suppressed(world) == {}
    assert on(start + timedelta(days=4, hours=1)) == ["suppressed"]
    found = _subscriber(world, target)
    assert (found.status, found.bounce_score) == ("bounced", 5.0)
    assert suppressed(world) == {target: "soft_bounce"}
    # A soft bounce does not mark the delivery bounced: the message may have got through.
    assert world.by_email(sent.edition_id)[target].status == "sent"
    assert sorted(send_alert(world, 0).verp) == sorted(set(sent.readers) - {target})


def test_a_soft_bounce_after_the_expiry_starts_the_score_again(world: World) -> None:
    sent = send_alert(world)
    target = sent.readers[0]
    verp = sent.verp[target]
    data = bounce("own-exim-ar-mailbox-full.eml", verp, target)
    start = world.clock()
    for days in (0, 1, 2, 3):
        handle_message(
            world.engine, world.settings, data, envelope_to=verp, now=at(start, days=days)
        )
    assert _subscriber(world, target).bounce_score == 4.0
    later = start + timedelta(days=3 + world.settings.soft_bounce_expiry_days + 1)
    [applied] = handle_message(world.engine, world.settings, data, envelope_to=verp, now=at(later))
    assert applied.action == "scored"
    assert _subscriber(world, target).bounce_score == 1.0
    assert suppressed(world) == {}


def test_the_soft_bounce_threshold_is_a_setting(tmp_path: Path, migrated_template: Path) -> None:
    for world in make_world(tmp_path, migrated_template, soft_bounce_threshold=2.0):
        sent = send_alert(world, 1)
        target = sent.readers[0]
        verp = sent.verp[target]
        data = bounce("own-exim-ar-mailbox-full.eml", verp, target)
        start = world.clock()
        actions = [
            handle_message(
                world.engine, world.settings, data, envelope_to=verp, now=at(start, days=day)
            )[0].action
            for day in (0, 1)
        ]
        assert actions == ["scored", "suppressed"]


# -- complaints, auto-replies, unsubscribes ----------------------------------------------------


def test_a_complaint_unsubscribes_from_everything_and_suppresses(world: World) -> None:
    sent = send_alert(world, 2, topics=("breaking", "syria", "economy"))
    target = sent.readers[0]
    assert subscriptions(world, target) == 3
    verp = sent.verp[target]
    [applied] = handle_message(
        world.engine, world.settings, bounce("own-arf-ar.eml", verp, target), envelope_to=None
    )
    assert applied.action == "unsubscribed"
    assert applied.delivery_id == world.by_email(sent.edition_id)[target].id
    assert subscriptions(world, target) == 0
    assert world.subscriber_status(target) == "complained"
    assert suppressed(world) == {target: "complaint"}
    other = sent.readers[1]
    assert (subscriptions(world, other), world.subscriber_status(other)) == (3, "active")


def test_a_complaint_without_verp_uses_the_reported_address(world: World) -> None:
    sent = send_alert(world, 1)
    target = sent.readers[0]
    [applied] = handle_message(
        world.engine, world.settings, bounce("own-arf-ar.eml", None, target), envelope_to=None
    )
    assert (applied.report.kind, applied.action) == ("complaint", "unsubscribed")
    assert suppressed(world) == {target: "complaint"}


@pytest.mark.parametrize("name", ["rfc3834-01.eml", "rfc3834-02.eml", "own-autoreply-ar.eml"])
def test_an_auto_reply_to_our_verp_address_changes_nothing(world: World, name: str) -> None:
    sent = send_alert(world)
    verp = sent.verp[sent.readers[0]]
    applied = handle_message(
        world.engine, world.settings, (CORPUS / name).read_bytes(), envelope_to=verp
    )
    assert [a.action for a in applied] == ["ignored:auto-reply"]
    unchanged(world, sent)


def _mailto(data: bytes) -> tuple[str, str]:
    """The (address, subject) of a sent message's List-Unsubscribe mailto."""
    header = str(message_from_bytes(data)["List-Unsubscribe"])
    url = re.search(r"<(mailto:[^>]+)>", header)
    assert url, header
    parts = urlsplit(url.group(1))
    return parts.path, parse_qs(parts.query)["subject"][0]


def test_a_list_unsubscribe_mailto_ends_the_subscription_the_email_was_sent_for(
    world: World,
) -> None:
    sent = send_alert(world, 2)
    target = sent.readers[0]
    address, token = _mailto(sent.data[target])
    assert address == f"unsubscribe@{world.settings.envelope_domain}"
    request = f"From: {target}\r\nTo: {address}\r\nSubject: {token}\r\n\r\nunsubscribe\r\n"
    [applied] = handle_message(world.engine, world.settings, request.encode(), envelope_to=address)
    assert applied.action == "unsubscribed"
    assert (subscriptions(world, target), world.subscriber_status(target)) == (0, "unsubscribed")
    assert suppressed(world) == {}  # leaving is not a bounce
    # A tampered token changes nothing.
    other = sent.readers[1]
    _, other_token = _mailto(sent.data[other])
    tampered = f"To: {address}\r\nSubject: {other_token[:-2]}xx\r\n\r\n"
    [applied] = handle_message(world.engine, world.settings, tampered.encode(), envelope_to=None)
    assert applied.action == "ignored:no valid unsubscribe token in the subject"
    assert subscriptions(world, other) == 1


# -- the SMTP intake ---------------------------------------------------------------------------


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def test_the_smtp_intake_applies_bounces_and_unsubscribes_received_over_smtp(
    world: World,
) -> None:
    sent = send_alert(world, 3)
    bounced, leaving = sent.readers[0], sent.readers[1]
    controller = start_intake("127.0.0.1", 0, world.engine, world.settings)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            verp = sent.verp[bounced]
            refused = client.sendmail("", [verp], _crlf(bounce("own-gmail-ar.eml", verp, bounced)))
            assert refused == {}
            address, token = _mailto(sent.data[leaving])
            client.sendmail(
                leaving, [address], f"To: {address}\r\nSubject: {token}\r\n\r\nunsubscribe\r\n"
            )
            # Not an open relay: mail for other domains is refused at RCPT.
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
                client.sendmail("", ["someone@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
            assert refusal.value.recipients["someone@elsewhere.example"][0] == 550
    finally:
        controller.stop()
    assert world.by_email(sent.edition_id)[bounced].status == "bounced"
    assert suppressed(world) == {bounced: "hard_bounce"}
    assert world.subscriber_status(leaving) == "unsubscribed"
    assert world.subscriber_status(sent.readers[2]) == "active"


def test_the_smtp_intake_asks_the_sender_to_retry_when_the_database_fails(
    world: World, tmp_path: Path
) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables at all
    controller = start_intake("127.0.0.1", 0, broken, world.settings)
    try:
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=10) as client:
            verp = Tokens(world.settings).verp_address(1)  # genuine: the lookup is attempted
            data = _crlf(bounce("own-sendmail-verp.eml", verp, "reader@example.com"))
            with pytest.raises(smtplib.SMTPDataError) as error:
                client.sendmail("", [verp], data)
            assert error.value.smtp_code == 451
    finally:
        controller.stop()
        broken.dispose()


# -- the IMAP poller ---------------------------------------------------------------------------


class FakeImap:
    """The imaplib calls the poller makes, over a dict of messages (no IMAP server here)."""

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = {str(i + 1).encode(): data for i, data in enumerate(messages)}
        self.flags: dict[bytes, set[str]] = {uid: set() for uid in self.messages}
        self.calls: list[tuple[Any, ...]] = []

    def login(self, user: str, password: str) -> tuple[str, list[bytes]]:
        self.calls.append(("login", user, password))
        return "OK", [b"LOGIN completed"]

    def select(self, mailbox: str = "INBOX") -> tuple[str, list[bytes]]:
        self.calls.append(("select", mailbox))
        return "OK", [str(len(self.messages)).encode()]

    def uid(self, command: str, *args: Any) -> tuple[str, list[Any]]:
        self.calls.append((command, *args))
        if command == "SEARCH":
            assert args == ("UNSEEN",)
            return "OK", [b" ".join(u for u in self.messages if "\\Seen" not in self.flags[u])]
        uid = args[0]
        if command == "FETCH":
            assert "PEEK" in args[1]  # fetching must not mark it seen: only success does
            data = self.messages[uid]
            return "OK", [(b"%s (UID %s BODY[] {%d}" % (uid, uid, len(data)), data), b")"]
        if command == "STORE":
            self.flags[uid].update(args[2].strip("()").split())
            return "OK", [b""]
        raise AssertionError(command)

    def expunge(self) -> tuple[str, list[bytes]]:
        for uid in [u for u, f in self.flags.items() if "\\Deleted" in f]:
            del self.messages[uid]
            del self.flags[uid]
        return "OK", [b""]

    def logout(self) -> tuple[str, list[bytes]]:
        self.calls.append(("logout",))
        return "BYE", [b""]


def test_the_imap_poller_applies_unseen_messages_and_marks_them_seen(world: World) -> None:
    sent = send_alert(world, 3)
    bounced, leaving = sent.readers[0], sent.readers[1]
    address, token = _mailto(sent.data[leaving])
    fake = FakeImap(
        [
            bounce("own-exchange-ar-verp.eml", sent.verp[bounced], bounced),
            (CORPUS / "rfc3834-01.eml").read_bytes(),
            f"To: {address}\r\nSubject: {token}\r\n\r\n".encode(),
        ]
    )
    settings = world.settings.model_copy(
        update={"imap_url": "imaps://bounces%40alakhbar.example:p%40ss@imap.example/Bounces"}
    )
    opened: list[tuple[str, int]] = []

    def factory(host: str, port: int) -> FakeImap:
        opened.append((host, port))
        return fake

    assert poll_imap(world.engine, settings, factory) == 3
    assert opened == [("imap.example", 993)]
    assert fake.calls[:2] == [("login", "bounces@alakhbar.example", "p@ss"), ("select", "Bounces")]
    assert fake.calls[-1] == ("logout",)
    assert all(flags == {"\\Seen"} for flags in fake.flags.values())
    assert suppressed(world) == {bounced: "hard_bounce"}
    assert world.subscriber_status(leaving) == "unsubscribed"
    # A second pass finds nothing new; with delete, handled messages go away.
    assert poll_imap(world.engine, settings, factory) == 0
    fake.flags = {uid: set() for uid in fake.messages}
    assert poll_imap(world.engine, settings, factory, delete=True) == 3
    assert fake.messages == {}


def test_a_message_the_poller_cannot_apply_stays_unseen_for_the_next_pass(
    world: World, tmp_path: Path
) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    verp = Tokens(world.settings).verp_address(1)
    fake = FakeImap([bounce("own-sendmail-verp.eml", verp, "reader@example.com")])
    settings = world.settings.model_copy(update={"imap_url": "imap://u:p@imap.example:1143/"})
    try:
        assert poll_imap(broken, settings, lambda host, port: fake) == 0
    finally:
        broken.dispose()
    assert fake.flags == {b"1": set()}
    assert ("select", "INBOX") in fake.calls


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MAILER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MAILER_DATABASE_URL", raising=False)
    monkeypatch.delenv("MAILER_IMAP_URL", raising=False)
    get_settings.cache_clear()
    db.reset_engine()
    try:
        yield tmp_path / "data"
    finally:
        get_settings.cache_clear()
        db.reset_engine()


def test_inbound_parse_prints_one_json_line_per_reported_recipient_without_a_database(
    cli_env: Path,
) -> None:
    files = [CORPUS / n for n in ("own-gmail-ar.eml", "rfc3464-35.eml", "rfc3834-01.eml")]
    result = CliRunner().invoke(cli.app, ["inbound", "parse", *map(str, files)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(x["file"]).name, x["recipient"], x["kind"], x["status"]) for x in lines] == [
        ("own-gmail-ar.eml", "khaled.omar@example.com.sa", "hard", "5.1.1"),
        ("rfc3464-35.eml", "kijitora@nyaan.example.com", "hard", "5.0.0"),
        ("rfc3464-35.eml", "sabatora@cat.example.net", "soft", "4.0.0"),
        ("rfc3464-35.eml", "mikeneko@neko.example.or.jp", "hard", "5.0.0"),
        ("rfc3834-01.eml", "kijitora@example.net", "auto-reply", None),
    ]
    assert lines[0]["verp"] == "bounces+4244-a396459b5d52"
    assert "does not exist" in lines[0]["reason"]
    assert not cli_env.exists()  # no database was created

    piped = CliRunner().invoke(
        cli.app, ["inbound", "parse", "-"], input=(CORPUS / "own-arf-ar.eml").read_bytes()
    )
    assert json.loads(piped.stdout)["kind"] == "complaint"
    missing = CliRunner().invoke(cli.app, ["inbound", "parse", str(CORPUS / "nope.eml")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_inbound_poll_without_an_imap_url_says_what_to_set(cli_env: Path) -> None:
    result = CliRunner().invoke(cli.app, ["inbound", "poll"])
    assert result.exit_code == 1 and "MAILER_IMAP_URL" in result.output
