"""Suppressions: added, listed, lifted and imported in any case, and honoured by every plan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.addresses import InvalidAddress
from mailer.config import Settings
from mailer.db import make_engine
from mailer.dispatch import MemoryDispatcher
from mailer.migrate import upgrade
from mailer.models import DeliveryStatus, Suppression
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.stories import ensure_topics
from mailer.suppress import (
    add_suppression,
    count_suppressions,
    get_suppression,
    import_suppressions,
    list_suppressions,
    remove_suppression,
)
from tests.support.stack import create_pg_database, drop_pg_database, need_service, pg_admin_url
from tests.support.world import Clock, World, make_world, migrated_template, sent_to

__all__ = ["migrated_template"]


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template)


def add(world: World, email: str, reason: str = "manual") -> tuple[int, bool]:
    with world.engine.begin() as conn:
        row, created = add_suppression(conn, email, world.settings, reason=reason, source="test")
    return row.id, created


# -- one at a time ------------------------------------------------------------------------


def test_an_address_is_suppressed_in_any_case(world: World) -> None:
    first, created = add(world, "Foo@Example.COM", reason="complaint")
    assert created
    again, created = add(world, "foo@example.com", reason="manual")
    assert (again, created) == (first, False)
    with world.engine.connect() as conn:
        row = get_suppression(conn, "FOO@EXAMPLE.com", world.settings)
    assert row is not None
    # Stored normalised (domain lower-cased), with its first reason kept.
    assert (row.id, row.email, row.reason, row.source) == (
        first,
        "Foo@example.com",
        "complaint",
        "test",
    )


def test_lifting_a_suppression_in_any_case(world: World) -> None:
    add(world, "foo@example.com")
    with world.engine.begin() as conn:
        assert remove_suppression(conn, "FOO@Example.com", world.settings)
        assert not remove_suppression(conn, "foo@example.com", world.settings)
        assert get_suppression(conn, "foo@example.com", world.settings) is None


def test_bad_input_is_refused_with_a_reason(world: World) -> None:
    with pytest.raises(InvalidAddress, match="@-sign"):
        add(world, "not-an-address")
    with pytest.raises(InvalidAddress):
        add(world, "a@example.com\r\nBcc: victim@example.org")
    with pytest.raises(ValueError, match="reason must be 1 to 32"):
        add(world, "a@example.com", reason="x" * 33)
    assert world.suppressions() == []


def test_list_is_newest_first_paged_and_searchable(world: World) -> None:
    for name in ("alice", "bob", "Alia", "carol_x"):
        add(world, f"{name}@example.com")
    with world.engine.begin() as conn:
        conn.execute(
            update(Suppression).where(Suppression.email == "bob@example.com").values(email=None)
        )
        rows = list_suppressions(conn, 10, 0)
        assert [r.email for r in rows] == [
            "carol_x@example.com",
            "Alia@example.com",
            None,
            "alice@example.com",
        ]
        assert [r.email for r in list_suppressions(conn, 2, 1)] == ["Alia@example.com", None]
        assert [r.email for r in list_suppressions(conn, 10, 0, "ALI")] == [
            "Alia@example.com",
            "alice@example.com",
        ]
        assert count_suppressions(conn, "ali") == 2
        # LIKE wildcards in the search are literal characters.
        assert [r.email for r in list_suppressions(conn, 10, 0, "_")] == ["carol_x@example.com"]
        assert list_suppressions(conn, 10, 0, "%") == []
        # An erased address is still found by the whole address (its hash).
        found = list_suppressions(conn, 10, 0, "Bob@example.com", settings=world.settings)
        assert [(r.email, r.reason) for r in found] == [(None, "manual")]
        assert list_suppressions(conn, 10, 0, "Bob@example.com") == []


# -- import ------------------------------------------------------------------------------


def test_import_a_csv_with_an_email_column(world: World, tmp_path: Path) -> None:
    add(world, "known@example.com")
    path = tmp_path / "bounces.csv"
    path.write_bytes(
        "\ufeffname,email\r\n"  # a BOM and CRLF, as spreadsheets write them
        "أحمد,Ahmed@Example.com\r\n"
        "\r\n"
        "# a comment,x\r\n"
        "someone,not-an-address\r\n"
        "again,ahmed@example.COM\r\n"
        "old,KNOWN@example.com\r\n".encode()
        + b"broken,\xff\xfe@example.com\r\n"
        + "لا أحد,\r\n".encode()
        + "عربي,قارئ@example.org\r\n".encode()
    )
    report = import_suppressions(world.engine, path, world.settings, "bounce-list", chunk=2)
    assert (report.read, report.added, report.existing) == (7, 2, 2)
    assert [line for line, _ in report.errors] == [5, 8, 9]
    assert "not-an-address" in report.errors[0][1]
    assert report.errors[1][1] == "not UTF-8 text"
    with world.engine.connect() as conn:
        rows = {r.email: r for r in list_suppressions(conn, 10, 0)}
    assert set(rows) == {"Ahmed@example.com", "known@example.com", "قارئ@example.org"}
    assert rows["Ahmed@example.com"].reason == "bounce-list"
    assert rows["Ahmed@example.com"].source == "import:bounces.csv"
    assert rows["known@example.com"].reason == "manual"  # already there: left as it was


def test_import_one_address_per_line_streams_in_chunks(world: World, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("".join(f"reader{i}@example.com\n" for i in range(25)), encoding="utf-8")
    chunks: list[int] = []
    report = import_suppressions(
        world.engine, path, world.settings, progress=chunks.append, chunk=10
    )
    assert (report.read, report.added, report.existing, report.errors) == (25, 25, 0, [])
    assert chunks == [10, 10, 5]
    # Running it again adds nothing (an interrupted import can simply be run again).
    report = import_suppressions(world.engine, path, world.settings, chunk=10)
    assert (report.added, report.existing) == (0, 25)
    with world.engine.connect() as conn:
        assert count_suppressions(conn) == 25
        assert {r.reason for r in list_suppressions(conn, 100, 0)} == {"import"}


# -- every plan honours them -------------------------------------------------------------


def planned(world: World, edition_id: int) -> set[str]:
    return set(world.by_email(edition_id))


def test_a_suppressed_reader_is_left_out_of_the_next_plan(world: World) -> None:
    world.add_readers(4)
    add(world, "READER0002@Example.com")
    started = world.service.trigger_alert(world.add_story())
    assert started.planned == 3
    assert "reader0002@example.com" not in planned(world, started.edition_id)

    # Lifted: the next edition reaches them again (their subscription never changed).
    with world.engine.begin() as conn:
        assert remove_suppression(conn, "reader0002@example.com", world.settings)
    again = world.service.trigger_alert(world.add_story("عاجل: خبر ثان"))
    assert "reader0002@example.com" in planned(world, again.edition_id)


def test_an_imported_suppression_applies_to_readers_already_subscribed(
    world: World, tmp_path: Path
) -> None:
    world.add_readers(3)
    path = tmp_path / "s.txt"
    path.write_text("Reader0001@EXAMPLE.com\nreader0003@example.com\n", encoding="utf-8")
    import_suppressions(world.engine, path, world.settings)
    started = world.service.trigger_alert(world.add_story())
    assert planned(world, started.edition_id) == {"reader0002@example.com"}


def test_a_suppression_added_mid_edition_stops_later_batches(world: World) -> None:
    world.add_readers(8)
    started = world.service.trigger_alert(world.add_story())
    assert started.planned == 8
    add(world, "reader0007@example.com")  # after planning, before any batch is claimed
    sender = world.sender()
    world.drain(sender)
    assert "reader0007@example.com" not in sent_to(*world.transports)
    assert len(sent_to(*world.transports)) == 7
    status = world.by_email(started.edition_id)["reader0007@example.com"].status
    assert status == DeliveryStatus.SUPPRESSED
    with world.engine.connect() as conn:
        assert conn.scalar(select(Suppression.reason)) == "manual"


# -- the same on PostgreSQL ----------------------------------------------------------------


@pytest.fixture
def pg_world(tmp_path: Path) -> Iterator[World]:
    need_service("PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close())
    url = create_pg_database()
    try:
        upgrade(url)
        settings = Settings(database_url=url, secret_keys="test-secret", hash_key="test-hash-key")
        engine = make_engine(url)
        with Session(engine) as session:
            ensure_topics(session)
            session.commit()
        dispatcher = MemoryDispatcher()
        service = Service(engine, settings, dispatcher, Renderer(settings))
        yield World(settings, engine, dispatcher, service, Clock())
        engine.dispose()
    finally:
        drop_pg_database(url)


@pytest.mark.postgres
def test_suppressions_on_postgresql(pg_world: World, tmp_path: Path) -> None:
    world = pg_world
    world.add_readers(4)
    first, _ = add(world, "Reader0001@EXAMPLE.com")
    assert add(world, "reader0001@example.com") == (first, False)
    path = tmp_path / "list.csv"
    path.write_text(
        "email\nreader0002@example.com\nREADER0002@example.com\nreader0001@example.com\nbad\n",
        encoding="utf-8",
    )
    report = import_suppressions(world.engine, path, world.settings, chunk=2)
    assert (report.added, report.existing, [line for line, _ in report.errors]) == (1, 2, [5])
    with world.engine.begin() as conn:
        assert [r.email for r in list_suppressions(conn, 10, 0, "READER")] == [
            "reader0002@example.com",
            "Reader0001@example.com",
        ]
        assert list_suppressions(conn, 10, 0, "%") == []
        assert remove_suppression(conn, "READER0002@example.com", world.settings)
    started = world.service.trigger_alert(world.add_story())
    assert set(world.by_email(started.edition_id)) == {
        "reader0002@example.com",
        "reader0003@example.com",
        "reader0004@example.com",
    }
