"""``mailer dkim keygen``, ``suppressions …`` and ``smtp status`` as operators run them.

In-process with Typer's ``CliRunner`` against an SQLite file under ``MAILER_DATA_DIR``.
"""

from __future__ import annotations

import json
import re
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import Result

from mailer import db
from mailer import placeholders as ph
from mailer.config import get_settings
from mailer.dkim import DkimSigner
from mailer.message import MessageSpec, MessageTemplate
from mailer.models import SmtpServer, Subscriber, utcnow
from mailer.subscribers import add_reader
from tests.support.cli import ok, reset_caches, run


@pytest.fixture
def upgraded(data_dir: Path) -> Path:
    ok("db", "upgrade")
    return data_dir


def refused(*args: str) -> str:
    """A failed command: non-zero exit, no traceback, the reason on stderr."""
    result = run(*args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return " ".join(result.stderr.split())


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


def loads(result: Result) -> Any:
    return json.loads(result.stdout)


# -- dkim keygen ---------------------------------------------------------------------------


def test_keygen_writes_a_private_key_and_prints_the_record_that_verifies(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = lines(ok("dkim", "keygen", "--selector", "news2026", "--ed25519"))
    key = Path(out[0])
    assert key == (data_dir / "dkim" / "news2026.pem").resolve()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    records = [line for line in out if " IN TXT " in line]
    assert [r.split(" IN TXT ")[0] for r in records] == [
        "news2026._domainkey.example.com",  # the From domain (news@example.com) by default
        "news2026-ed25519._domainkey.example.com",
    ]
    assert all(len(s) <= 255 for r in records for s in re.findall(r'"([^"]*)"', r))

    # Configure what it told us to, and a reader's message verifies against what it printed.
    for line in out:
        name, sep, value = line.partition("=")
        if sep and name.startswith("MAILER_DKIM_"):
            monkeypatch.setenv(name, value)
    reset_caches()
    signer = DkimSigner.from_settings(get_settings())
    assert signer is not None
    dns = {
        f"{r.split()[0]}.".encode(): "".join(re.findall(r'"([^"]*)"', r)).encode() for r in records
    }
    message = MessageTemplate.build(
        MessageSpec(
            subject="عاجل: خبر",
            html=f"<p>{ph.marker(ph.GREETING)}</p>",
            text=f"{ph.marker(ph.GREETING)}\n",
            sender=get_settings().sender,
            reply_to=None,
            list_id="breaking.news.example.com",
            kind="alert",
        )
    ).personalise(
        {
            ph.TO: "reader@example.org",
            ph.MESSAGE_ID: "<1.2@example.com>",
            ph.DATE: "Wed, 25 Nov 2026 09:30:00 +0200",
            ph.UNSUBSCRIBE_URL: "https://news.example.com/unsubscribe/T",
            ph.UNSUBSCRIBE_MAILTO: "mailto:unsubscribe@example.com?subject=T",
            ph.GREETING: "مرحباً،",
        }
    )
    assert dkimpy.verify(signer.sign(message), dnsfunc=lambda name, timeout=5: dns.get(name))


def test_keygen_json_with_domain_and_folder(data_dir: Path, tmp_path: Path) -> None:
    result = ok(
        "dkim",
        "keygen",
        "--selector",
        "s1",
        "--domain",
        "Example.ORG",
        "--out",
        str(tmp_path / "k"),
        "--json",
    )
    data = loads(result)
    assert data["domain"] == "example.org"
    [key] = data["keys"]
    assert key["key_file"] == str((tmp_path / "k" / "s1.pem").resolve())
    assert key["name"] == "s1._domainkey.example.org"
    assert key["value"].startswith("v=DKIM1; k=rsa; p=")
    assert key["record"].startswith('s1._domainkey.example.org IN TXT "v=DKIM1; k=rsa; p=')


def test_keygen_refuses_to_overwrite_a_key_or_a_bad_selector(data_dir: Path) -> None:
    first = lines(ok("dkim", "keygen", "--selector", "news"))[0]
    before = Path(first).read_bytes()
    assert "exists; pick another selector" in refused("dkim", "keygen", "--selector", "news")
    assert Path(first).read_bytes() == before
    assert "not a DKIM selector" in refused("dkim", "keygen", "--selector", "a b")
    assert "not a DKIM signing domain" in refused(
        "dkim", "keygen", "--selector", "x", "--domain", "no_domain"
    )


# -- suppressions --------------------------------------------------------------------------


def test_add_prints_the_id_and_is_case_insensitive(upgraded: Path) -> None:
    first = lines(ok("suppressions", "add", "Foo@Example.com", "--reason", "complaint"))
    assert first[0].isdigit()
    assert first[1] == "suppressed: Foo@example.com (complaint)"
    again = lines(ok("suppressions", "add", "foo@example.COM"))
    assert again[0] == first[0]
    assert again[1].startswith("already suppressed since ")
    data = loads(ok("suppressions", "add", "FOO@example.com", "--json"))
    assert (data["id"], data["created"], data["reason"]) == (int(first[0]), False, "complaint")


def test_bad_addresses_and_reasons_are_refused_clearly(upgraded: Path) -> None:
    assert "invalid address 'not-an-address'" in refused("suppressions", "add", "not-an-address")
    assert "Only one email address" in refused("suppressions", "add", "a@example.com,b@example.com")
    assert "reason must be" in refused("suppressions", "add", "a@example.com", "--reason", "x" * 40)
    assert "invalid address" in refused("suppressions", "remove", "nope")
    assert loads(ok("suppressions", "list", "--json"))["total"] == 0


def test_commands_before_db_upgrade_say_what_to_do(data_dir: Path) -> None:
    for args in (
        ("suppressions", "add", "a@example.com"),
        ("suppressions", "list"),
        ("smtp", "status"),
    ):
        assert "run `mailer db upgrade` first" in refused(*args)


def test_list_search_and_json(upgraded: Path) -> None:
    for address in ("alice@example.com", "bob@example.com", "alina@example.org"):
        ok("suppressions", "add", address)
    out = lines(ok("suppressions", "list"))
    assert out[0] == "3 suppressed"
    assert [line.split()[-2] for line in out[1:]] == [
        "alina@example.org",
        "bob@example.com",
        "alice@example.com",
    ]
    data = loads(ok("suppressions", "list", "--search", "ALI", "--limit", "1", "--json"))
    assert data["total"] == 2
    assert [s["email"] for s in data["suppressions"]] == ["alina@example.org"]
    assert set(data["suppressions"][0]) == {"id", "email", "reason", "source", "created_at"}


def test_remove_lifts_it_and_says_when_there_was_none(upgraded: Path) -> None:
    ok("suppressions", "add", "foo@example.com")
    assert lines(ok("suppressions", "remove", "FOO@example.com")) == ["removed: FOO@example.com"]
    assert "foo@example.com is not suppressed" in refused(
        "suppressions", "remove", "foo@example.com"
    )
    assert loads(ok("suppressions", "list", "--json"))["total"] == 0


def test_remove_tells_that_a_bounced_reader_stays_bounced(upgraded: Path) -> None:
    add_reader(db.get_engine(), get_settings(), "reader@example.com")
    with db.get_engine().begin() as conn:
        conn.execute(update(Subscriber).values(status="bounced"))
    ok("suppressions", "add", "reader@example.com", "--reason", "hard_bounce")
    out = lines(ok("suppressions", "remove", "reader@example.com"))
    assert out[1].startswith("the reader stays bounced")


def test_import_reports_counts_and_refused_lines(upgraded: Path, tmp_path: Path) -> None:
    ok("suppressions", "add", "known@example.com")
    path = tmp_path / "list.txt"
    path.write_text("a@example.com\nKNOWN@example.com\nbroken\nb@example.com\n", encoding="utf-8")
    out = lines(ok("suppressions", "import", str(path), "--reason", "old-list"))
    assert out[0] == "2 added, 1 already suppressed, 1 refused"
    assert out[1].startswith("  line 3: invalid address 'broken'")
    data = loads(ok("suppressions", "list", "--json"))
    assert {s["email"]: s["reason"] for s in data["suppressions"]} == {
        "a@example.com": "old-list",
        "b@example.com": "old-list",
        "known@example.com": "manual",
    }
    again = loads(ok("suppressions", "import", str(path), "--json"))
    assert (again["added"], again["existing"], again["errors"][0]["line"]) == (0, 3, 3)
    assert refused("suppressions", "import", str(tmp_path / "missing.txt"))


# -- smtp status ---------------------------------------------------------------------------


def test_smtp_status_shows_the_configured_default(
    upgraded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILER_SMTP_URL", "smtp://mailer:s3cret@mail.example.com:587?starttls=true")
    reset_caches()
    result = ok("smtp", "status")
    assert "s3cret" not in result.stdout
    assert re.search(
        r"^default\s+-\s+in use\s+smtp://mailer:\*\*\*@mail\.example\.com:587", result.stdout, re.M
    )
    [server] = loads(ok("smtp", "status", "--json"))["servers"]
    assert server["source"] == "MAILER_SMTP_URL" and server["in_use"] is True


def test_smtp_status_shows_each_servers_health_without_passwords(upgraded: Path) -> None:
    later = utcnow() + timedelta(minutes=5)
    servers = [
        SmtpServer(name="primary", url="smtps://u:hunter2@smtp1.example.com", weight=3),
        SmtpServer(
            name="backup",
            url="smtp://smtp2.example.com:2525",
            healthy=False,
            down_until=later,
            last_error="connection refused",
        ),
        SmtpServer(name="old", url="smtp://smtp3.example.com", enabled=False),
    ]
    with Session(db.get_engine()) as session:
        session.add_all(servers)
        session.commit()
    result = ok("smtp", "status")
    assert "hunter2" not in result.stdout
    out = lines(result)
    assert re.match(r"default\s+-\s+standby", out[1])
    assert re.match(r"primary\s+3\s+healthy\s+smtps://u:\*\*\*@smtp1\.example\.com$", out[2])
    assert re.match(
        r"backup\s+1\s+down until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+smtp://smtp2", out[3]
    )
    assert out[4].strip() == "last error: connection refused"
    assert re.match(r"old\s+1\s+disabled", out[5])
    data = loads(ok("smtp", "status", "--json"))["servers"]
    assert [s["name"] for s in data] == ["default", "primary", "backup", "old"]
    backup = data[2]
    assert (backup["healthy"], backup["enabled"], backup["last_error"]) == (
        False,
        True,
        "connection refused",
    )
    assert backup["down_until"].startswith(later.strftime("%Y-%m-%dT%H:%M"))
    assert set(backup) >= {
        "name",
        "url",
        "weight",
        "enabled",
        "healthy",
        "down_until",
        "last_error",
    }
