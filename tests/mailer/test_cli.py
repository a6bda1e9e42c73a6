"""The ``mailer`` command line, as scripts use it: ids on the first line, ``--json``, exit codes.

Runs in-process with Typer's ``CliRunner`` against an SQLite file under ``MAILER_DATA_DIR``;
``NullDispatcher`` queues nothing, so no broker or worker is needed (editions stay queued).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.support.cli import first_line, ok, run


def new_id(result: Result) -> int:
    line = first_line(result)
    assert line.isdigit(), result.stdout
    return int(line)


def loads(result: Result) -> Any:
    return json.loads(result.stdout)


def refused(result: Result) -> str:
    """A failed command: non-zero exit, no traceback, the reason on stderr (one line)."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return " ".join(result.stderr.split())


@pytest.fixture
def demo(data_dir: Path) -> Path:
    ok("demo", "--readers", "30")
    return data_dir


@pytest.fixture
def newsroom(data_dir: Path) -> Path:
    """The schema, the topics and the sample stories, but no readers."""
    ok("demo", "--readers", "0")
    return data_dir


def a_story(title: str = "عاجل: اختبار", topic: str = "syria") -> int:
    return new_id(
        ok(
            "stories",
            "add",
            "--title",
            title,
            "--url",
            f"https://news.example.com/{uuid.uuid4().hex}",
            "--topic",
            topic,
            "--breaking",
        )
    )


def show(edition_id: int) -> dict[str, Any]:
    data = loads(ok("editions", "show", str(edition_id), "--json"))
    assert isinstance(data, dict)
    return data


# -- db and demo -------------------------------------------------------------------------------


def test_db_upgrade_creates_the_database_and_is_safe_to_repeat(data_dir: Path) -> None:
    result = ok("db", "upgrade")
    assert "up to date" in result.stdout
    assert (data_dir / "mailer.db").is_file()
    ok("db", "upgrade")
    assert loads(ok("stories", "list", "--json")) == []


def test_demo_loads_sample_stories_and_readers(demo: Path) -> None:
    items = loads(ok("stories", "list", "--json", "--limit", "100"))
    assert len(items) == 10
    assert {"id", "topic", "breaking", "published_at", "title"} <= set(items[0])
    assert {i["topic"] for i in items} >= {"syria", "egypt", "economy"}
    published = [i["published_at"] for i in items]
    assert published == sorted(published, reverse=True)  # newest first
    readers = loads(ok("subscribers", "list", "--json"))
    assert readers["total"] == 30
    # A second demo adds nobody twice.
    ok("demo", "--readers", "30")
    assert loads(ok("subscribers", "list", "--json"))["total"] == 30
    assert len(loads(ok("stories", "list", "--json", "--limit", "100"))) == 10


def test_db_upgrade_alone_is_enough_to_add_readers_and_stories(data_dir: Path) -> None:
    ok("db", "upgrade")
    new_id(ok("subscribers", "add", "x@example.com"))
    a_story()


# -- stories -----------------------------------------------------------------------------------


def test_stories_add_prints_the_new_id_alone_on_the_first_line(demo: Path) -> None:
    result = ok(
        "stories",
        "add",
        "--title",
        "عاجل: وقف إطلاق النار في حلب",
        "--summary",
        "ملخص",
        "--url",
        "https://news.example.com/aleppo",
        "--topic",
        "syria",
        "--breaking",
    )
    story_id = new_id(result)
    assert story_id > 10  # after the ten samples
    (item,) = [i for i in loads(ok("stories", "list", "--json")) if i["id"] == story_id]
    assert item == {**item, "topic": "syria", "breaking": True}
    # The same URL again updates that story.
    again = ok(
        "stories",
        "add",
        "--title",
        "عاجل: تحديث",
        "--url",
        "https://news.example.com/aleppo",
        "--topic",
        "syria",
        "--json",
    )
    assert loads(again) == {"id": story_id, "created": False}


def test_stories_add_with_an_unknown_topic_fails_clearly(demo: Path) -> None:
    result = run(
        "stories", "add", "--title", "t", "--url", "https://news.example.com/x", "--topic", "mars"
    )
    message = refused(result)
    assert "unknown topic" in message and "mars" in message
    assert result.stdout == ""
    assert all(i["title"] != "t" for i in loads(ok("stories", "list", "--json")))


# -- subscribers -------------------------------------------------------------------------------


def test_subscribers_add_prints_an_id(newsroom: Path) -> None:
    subscriber_id = new_id(ok("subscribers", "add", "x@example.com"))
    listed = loads(ok("subscribers", "list", "--json"))
    assert listed["subscribers"] == [
        {"id": subscriber_id, "email": "x@example.com", "name": "", "status": "active"}
    ]
    # Adding the same address again gives the same reader.
    assert new_id(ok("subscribers", "add", "X@example.com")) == subscriber_id


def test_subscribers_add_refuses_a_bad_address(newsroom: Path) -> None:
    message = refused(run("subscribers", "add", "not an address"))
    assert "invalid address" in message
    assert loads(ok("subscribers", "list", "--json"))["total"] == 0


def test_subscribers_import_reports_bad_lines_and_imports_the_good_ones(
    newsroom: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text(
        "email,name,topics,cadence\n"
        "good1@example.com,أحمد,breaking;syria,instant\n"
        "not an address,سارة,breaking,instant\n"
        "good2@example.com,علي,mars,daily\n"
        "good3@example.com,نور,syria,hourly\n"
        "good4@example.com,,economy,weekly\n",
        encoding="utf-8",
    )
    result = ok("subscribers", "import", str(csv), "--consented")
    text = " ".join(result.stdout.split())
    assert "2 added, 0 already known, 3 refused" in text
    assert "line 3: invalid address" in text
    assert "line 4: unknown topic 'mars'" in text
    assert "line 5: unknown cadence 'hourly'" in text

    listed = loads(ok("subscribers", "list", "--json"))
    assert listed["total"] == 2
    assert {(s["email"], s["status"]) for s in listed["subscribers"]} == {
        ("good1@example.com", "active"),
        ("good4@example.com", "active"),
    }

    report = loads(ok("subscribers", "import", str(csv), "--consented", "--json"))
    assert (report["read"], report["added"], report["existing"]) == (5, 0, 2)
    assert [e["line"] for e in report["errors"]] == [3, 4, 5]


def test_subscribers_import_without_consent_leaves_readers_pending(
    newsroom: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text("email\npending@example.com\n", encoding="utf-8")
    ok("subscribers", "import", str(csv))
    (reader,) = loads(ok("subscribers", "list", "--json"))["subscribers"]
    assert reader["status"] == "pending"


def test_subscribers_import_of_a_file_without_an_email_column_fails(
    newsroom: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text("name,topics\nأحمد,breaking\n", encoding="utf-8")
    assert "email" in refused(run("subscribers", "import", str(csv), "--consented"))


# -- alerts and editions -----------------------------------------------------------------------


def test_alert_prints_the_edition_id_and_a_second_alert_reports_the_same(demo: Path) -> None:
    story_id = a_story()
    first = ok("alert", str(story_id))
    edition_id = new_id(first)
    assert "30 readers" in first.stdout

    second = ok("alert", str(story_id))
    assert new_id(second) == edition_id
    assert "already triggered" in second.stdout

    data = loads(ok("alert", str(story_id), "--json"))
    assert data["edition_id"] == edition_id and data["created"] is False


def test_editions_show_counts_every_reader_queued(demo: Path) -> None:
    edition_id = new_id(ok("alert", str(a_story())))
    data = show(edition_id)
    assert data["id"] == edition_id
    assert (data["kind"], data["status"]) == ("alert", "sending")
    assert data["counts"] == {"queued": 30}
    assert (data["total"], data["done"]) == (30, 0)
    human = ok("editions", "show", str(edition_id))
    assert first_line(human).startswith(f"{edition_id}  alert  sending")
    assert "0/30" in human.stdout

    listed = loads(ok("editions", "list", "--json"))
    assert [e["id"] for e in listed] == [edition_id]


def test_editions_pause_resume_and_cancel_change_the_status(demo: Path) -> None:
    edition_id = new_id(ok("alert", str(a_story())))

    paused = ok("editions", "pause", str(edition_id))
    assert paused.stdout.splitlines()[:2] == [str(edition_id), "paused"]
    assert show(edition_id)["status"] == "paused"
    assert "paused by an operator" in show(edition_id)["reason"]
    assert "not sending" in refused(run("editions", "pause", str(edition_id)))

    resumed = ok("editions", "resume", str(edition_id))
    assert resumed.stdout.splitlines()[:2] == [str(edition_id), "resumed"]
    assert show(edition_id)["status"] == "sending"

    cancelled = ok("editions", "cancel", str(edition_id))
    assert cancelled.stdout.splitlines()[:2] == [str(edition_id), "cancelled"]
    data = show(edition_id)
    assert data["status"] == "cancelled"
    assert data["counts"] == {"cancelled": 30}
    assert data["finished_at"] is not None
    assert "cannot be cancelled" in refused(run("editions", "cancel", str(edition_id)))
    assert "not paused" in refused(run("editions", "resume", str(edition_id)))


def test_editions_of_an_unknown_id_fail_clearly(demo: Path) -> None:
    assert "no edition with id 4242" in refused(run("editions", "show", "4242"))
    assert "no edition with id 4242" in refused(run("editions", "pause", "4242"))


def test_alert_of_an_unknown_story_fails_clearly(demo: Path) -> None:
    result = run("alert", "99999")
    assert "no story with id 99999" in refused(result)
    assert result.stdout == ""
    assert loads(ok("editions", "list", "--json")) == []


# -- digests -----------------------------------------------------------------------------------


def test_digest_send_prints_the_edition_id(demo: Path) -> None:
    ok(
        "stories",
        "add",
        "--title",
        "تقرير",
        "--url",
        "https://news.example.com/report",
        "--topic",
        "syria",
        "--published-at",
        "2020-01-02T03:04:05",
    )
    result = ok("digest", "send", "syria", "--cadence", "daily")
    edition_id = new_id(result)
    data = show(edition_id)
    assert data["kind"] == "digest"
    assert data["status"] == "sending"
    planned = int(result.stdout.splitlines()[1].split()[0])
    assert planned > 0 and data["counts"] == {"queued": planned}

    # Nothing new since: the next one is skipped, and says so.
    again = ok("digest", "send", "syria", "--cadence", "daily", "--json")
    data = loads(again)
    assert data["edition_id"] != edition_id
    assert (data["status"], data["planned"]) == ("skipped", 0)


def test_digest_send_refuses_an_unknown_topic_or_cadence(demo: Path) -> None:
    assert "no topic 'mars'" in refused(run("digest", "send", "mars", "--cadence", "daily"))
    assert "daily or weekly" in refused(run("digest", "send", "syria", "--cadence", "instant"))
    assert run("digest", "send", "syria", "--cadence", "hourly").exit_code != 0
