"""Digest schedules: wall-clock times across the DST changes of 2026, the beat's tick, digests.

Time is a clock the test sets (never a sleep). The UTC instants below are what tzdata says for
2026: Egypt keeps summer time from Friday 24 April 00:00 (clocks to 01:00, UTC+3) to Thursday
29 October 24:00 (back to 23:00, UTC+2); the United Kingdom from 29 March 01:00 UTC to
25 October 01:00 UTC.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from mailer import cli, schedules
from mailer.db import make_engine
from mailer.migrate import upgrade
from mailer.models import Delivery, Edition, EditionStory, Schedule, Story
from mailer.service import Service, Started
from mailer.stories import ensure_topics
from tests.support.cli import use_data_dir
from tests.support.stack import create_pg_database, drop_pg_database, need_service, pg_admin_url
from tests.support.world import World, make_world, migrated_template

__all__ = ["migrated_template"]

CAIRO, LONDON = ZoneInfo("Africa/Cairo"), ZoneInfo("Europe/London")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def schedule(**values: Any) -> Schedule:
    """An unsaved schedule (enough for the pure functions)."""
    defaults: dict[str, Any] = {"cadence": "daily", "at_time": None, "weekdays": None}
    defaults.update(cron=None, timezone="Africa/Cairo", enabled=True, last_due_at=None)
    defaults["created_at"] = utc(2026, 1, 1)
    return Schedule(**{**defaults, **values})


# -- when a schedule fires -----------------------------------------------------------------------


def test_daily_0700_cairo_follows_egyptian_summer_time_in_2026() -> None:
    daily = schedule(at_time="07:00", timezone="Africa/Cairo")
    spring = schedules.next_runs(daily, utc(2026, 4, 22), count=4)
    assert spring == [
        utc(2026, 4, 22, 5),
        utc(2026, 4, 23, 5),
        utc(2026, 4, 24, 4),
        utc(2026, 4, 25, 4),
    ]
    autumn = schedules.next_runs(daily, utc(2026, 10, 28), count=3)
    assert autumn == [utc(2026, 10, 28, 4), utc(2026, 10, 29, 4), utc(2026, 10, 30, 5)]
    # Every one of them is 07:00 on the newsroom's wall clock.
    assert {t.astimezone(CAIRO).strftime("%H:%M") for t in spring + autumn} == {"07:00"}


def test_weekly_sunday_0900_london_fires_right_on_both_switch_days() -> None:
    weekly = schedule(cadence="weekly", at_time="09:00", weekdays="sun", timezone="Europe/London")
    assert schedules.next_runs(weekly, utc(2026, 3, 20), count=3) == [
        utc(2026, 3, 22, 9),  # GMT
        utc(2026, 3, 29, 8),  # the switch day itself: BST since 01:00 UTC
        utc(2026, 4, 5, 8),
    ]
    assert schedules.next_runs(weekly, utc(2026, 10, 17), count=3) == [
        utc(2026, 10, 18, 8),
        utc(2026, 10, 25, 9),  # back to GMT at 01:00 UTC that morning
        utc(2026, 11, 1, 9),
    ]


@pytest.mark.parametrize(
    ("values", "after", "expected"),
    [
        # 01:30 does not exist in London on 29 March: it fires at the change, 02:00 BST.
        (
            {"at_time": "01:30", "timezone": "Europe/London"},
            utc(2026, 3, 27, 12),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
        ),
        # 01:30 happens twice on 25 October: it fires once, at the first (BST) one.
        (
            {"at_time": "01:30", "timezone": "Europe/London"},
            utc(2026, 10, 23, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # Two cron slots inside the gap fire once; in the repeated hour, once each.
        (
            {"cron": "*/30 1 * * *", "timezone": "Europe/London"},
            utc(2026, 3, 28, 12),
            [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0), utc(2026, 3, 30, 0, 30)],
        ),
        (
            {"cron": "*/30 1 * * *", "timezone": "Europe/London"},
            utc(2026, 10, 24, 12),
            [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1)],
        ),
        # Cairo skips 00:00-01:00 on 24 April and repeats 23:00-24:00 on 29 October.
        (
            {"at_time": "00:30", "timezone": "Africa/Cairo"},
            utc(2026, 4, 22, 12),
            [utc(2026, 4, 22, 22, 30), utc(2026, 4, 23, 22), utc(2026, 4, 24, 21, 30)],
        ),
        (
            {"at_time": "23:30", "timezone": "Africa/Cairo"},
            utc(2026, 10, 28, 12),
            [utc(2026, 10, 28, 20, 30), utc(2026, 10, 29, 20, 30), utc(2026, 10, 30, 21, 30)],
        ),
    ],
    ids=["london-gap", "london-repeat", "cron-gap", "cron-repeat", "cairo-gap", "cairo-repeat"],
)
def test_nonexistent_times_fire_at_the_change_and_repeated_ones_once(
    values: dict[str, Any], after: datetime, expected: list[datetime]
) -> None:
    assert schedules.next_runs(schedule(**values), after, count=3) == expected


def test_weekdays_and_cron_pick_the_days() -> None:
    working_week = schedule(at_time="08:00", weekdays="sun-thu", timezone="Asia/Riyadh")
    days = [t.strftime("%a") for t in schedules.next_runs(working_week, utc(2026, 11, 26, 6), 5)]
    assert days == ["Sun", "Mon", "Tue", "Wed", "Thu"]  # not Friday 27 or Saturday 28
    cron = schedule(cron="0 7 * * fri", timezone="Africa/Cairo")
    assert schedules.next_runs(cron, utc(2026, 11, 25), 2) == [
        utc(2026, 11, 27, 5),
        utc(2026, 12, 4, 5),
    ]


def test_due_at_is_the_latest_missed_slot_only_and_never_before_creation() -> None:
    daily = schedule(at_time="07:00", created_at=utc(2026, 3, 1, 4))
    assert schedules.due_at(daily, utc(2026, 3, 1, 4, 59)) is None
    assert schedules.due_at(daily, utc(2026, 3, 1, 5)) == utc(2026, 3, 1, 5)
    daily.last_due_at = utc(2026, 3, 1, 5)
    assert schedules.due_at(daily, utc(2026, 3, 2, 4, 59)) is None
    # Down for three days: one slot to fire, the latest.
    assert schedules.due_at(daily, utc(2026, 3, 4, 12)) == utc(2026, 3, 4, 5)
    late = schedule(at_time="07:00", created_at=utc(2026, 3, 1, 5, 1))  # created after 07:00
    assert schedules.due_at(late, utc(2026, 3, 1, 23)) is None


# -- adding, validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"topic": "sport"}, "unknown topic"),
        ({"cadence": "instant"}, "daily or weekly"),
        ({"at": "7am"}, "HH:MM"),
        ({"at": "24:00"}, "HH:MM"),
        ({"timezone": "Cairo"}, "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"at": None, "cron": "0 7 * *"}, "five valid fields"),
        ({"at": None, "cron": "0 7 30 2 *"}, "never fires"),
        ({"cron": "0 7 * * *"}, "not both"),
        ({"at": None}, "time of day"),
        ({"cadence": "weekly"}, "weekly schedule needs weekdays"),
        ({"weekdays": "funday"}, "weekday"),
    ],
)
def test_bad_schedules_are_refused_with_a_clear_message(
    world: World, values: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"topic": "syria", "cadence": "daily", "at": "07:00"}
    arguments.update(timezone="Africa/Cairo")
    with Session(world.engine) as session, pytest.raises(ValueError, match=message):
        schedules.add_schedule(session, **{**arguments, **values})


# -- the beat --------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, migrated_template: Path) -> Iterator[World]:
    yield from make_world(tmp_path, migrated_template, digest_story_limit=3)


def add(world: World, created: datetime, **values: Any) -> int:
    arguments: dict[str, Any] = {"topic": "syria", "cadence": "daily", "at": "07:00"}
    arguments.update(timezone="Africa/Cairo")
    with Session(world.engine) as session:
        added = schedules.add_schedule(session, **{**arguments, **values}, now=lambda: created)
        session.commit()
        return added.id


def tick(world: World, moment: datetime) -> list[int]:
    return schedules.tick(world.engine, world.settings, world.service, now=lambda: moment)


def scheduled(world: World) -> list[tuple[int | None, datetime, str]]:
    """(schedule, due time, status) of every edition, oldest first."""
    with Session(world.engine) as session:
        rows = session.execute(
            select(Edition.schedule_id, Edition.due_at, Edition.status).order_by(Edition.id)
        )
        return [(sid, due, status) for sid, due, status in rows if due is not None]


def titles(world: World, edition_id: int) -> list[str]:
    with Session(world.engine) as session:
        return list(
            session.scalars(
                select(Story.title)
                .join(EditionStory, EditionStory.story_id == Story.id)
                .where(EditionStory.edition_id == edition_id)
                .order_by(EditionStory.position)
            )
        )


def test_the_tick_fires_cairo_and_london_schedules_at_the_right_instants(world: World) -> None:
    created = utc(2026, 3, 19, 23)
    cairo = add(world, created)
    london = add(
        world, created, cadence="weekly", weekdays="sun", at="09:00", timezone="Europe/London"
    )
    windows = [(utc(2026, 3, 20), utc(2026, 4, 6)), (utc(2026, 4, 21), utc(2026, 4, 26))]
    windows += [(utc(2026, 10, 16), utc(2026, 11, 2))]
    fired: list[datetime] = []
    for start, end in windows:  # the beat runs hourly inside each window, and not between
        moment = start
        while moment < end:
            fired += [moment] * len(tick(world, moment))
            moment += timedelta(hours=1)
    rows = scheduled(world)
    assert len(rows) == len(fired)
    due = {key: [d for sid, d, _ in rows if sid == key] for key in (cairo, london)}
    assert due[london] == [
        utc(2026, 3, 22, 9), utc(2026, 3, 29, 8), utc(2026, 4, 5, 8),
        utc(2026, 4, 19, 8),  # one catch-up at 21 April for the two Sundays missed
        utc(2026, 10, 11, 8),  # and one at 16 October for the whole summer
        utc(2026, 10, 18, 8), utc(2026, 10, 25, 9), utc(2026, 11, 1, 9),
    ]  # fmt: skip
    assert {d.astimezone(CAIRO).strftime("%H:%M") for d in due[cairo]} == {"07:00"}
    assert [d for d in due[cairo] if utc(2026, 4, 22) < d < utc(2026, 4, 26)] == [
        utc(2026, 4, 22, 5), utc(2026, 4, 23, 5), utc(2026, 4, 24, 4), utc(2026, 4, 25, 4),
    ]  # fmt: skip
    assert [d for d in due[cairo] if utc(2026, 10, 27) < d < utc(2026, 11, 1)] == [
        utc(2026, 10, 27, 4), utc(2026, 10, 28, 4), utc(2026, 10, 29, 4),
        utc(2026, 10, 30, 5), utc(2026, 10, 31, 5),
    ]  # fmt: skip
    # Apart from the catch-ups at the start of a window, each slot was created by the hourly
    # tick at exactly its instant: not an hour early or late around a change.
    starts = {start for start, _ in windows}
    assert all(
        moment == d or moment in starts for moment, (_, d, _) in zip(fired, rows, strict=True)
    )
    # No stories: every one of them recorded as skipped, nothing dispatched.
    assert {status for _, _, status in rows} == {"skipped"}
    assert world.dispatcher.sent == []


def test_a_second_tick_or_beat_creates_nothing(world: World) -> None:
    add(world, utc(2026, 5, 1))
    world.add_readers(2, topics=("syria",), cadence="daily")
    world.add_story("خبر", published_at=utc(2026, 5, 2, 3))
    first = tick(world, utc(2026, 5, 2, 4, 0, 10))
    assert len(first) == 1
    assert tick(world, utc(2026, 5, 2, 4, 0, 20)) == []
    # A beat that lost its last_due_at update (or never saw it) still creates nothing.
    with world.engine.begin() as conn:
        conn.execute(update(Schedule).values(last_due_at=None))
    assert tick(world, utc(2026, 5, 2, 4, 5)) == []
    assert [(due, status) for _, due, status in scheduled(world)] == [
        (utc(2026, 5, 2, 4), "sending")
    ]


def test_after_a_24_hour_outage_one_catch_up_digest_has_everything_since_the_last(
    world: World,
) -> None:
    add(world, utc(2026, 1, 9))
    readers = world.add_readers(2, topics=("syria",), cadence="daily")
    world.add_story("الأول", breaking=False, published_at=utc(2026, 1, 10, 4))
    assert len(tick(world, utc(2026, 1, 10, 5, 0, 30))) == 1  # 07:00 Cairo = 05:00 UTC
    world.drain(world.sender())
    world.add_story("عادي قديم", breaking=False, published_at=utc(2026, 1, 10, 9))
    world.add_story("عاجل", breaking=True, published_at=utc(2026, 1, 11, 20))
    world.add_story("عادي جديد", breaking=False, published_at=utc(2026, 1, 12, 4, 30))
    world.add_story("بعد الموعد", breaking=False, published_at=utc(2026, 1, 12, 5, 10))
    assert tick(world, utc(2026, 1, 11, 4, 30)) == []
    # The beat is down for 25 hours, over the slots of the 11th and of the 12th.
    catch_up = tick(world, utc(2026, 1, 12, 5, 30))
    assert len(catch_up) == 1
    assert tick(world, utc(2026, 1, 12, 5, 31)) == []
    assert world.edition(catch_up[0]).due_at == utc(2026, 1, 12, 5)
    # Everything since the last sent digest, breaking first then newest; the story published
    # after 07:00 waits for the next digest.
    assert titles(world, catch_up[0]) == ["عاجل", "عادي جديد", "عادي قديم"]
    assert len(world.deliveries(catch_up[0])) == len(readers)
    following = tick(world, utc(2026, 1, 13, 5))
    assert titles(world, following[0]) == ["بعد الموعد"]
    assert len(scheduled(world)) == 3


def test_a_digest_holds_new_stories_once_breaking_first_capped_and_empty_is_skipped(
    world: World,
) -> None:
    add(world, utc(2026, 6, 1))  # 07:00 Cairo = 04:00 UTC in summer
    world.add_readers(3, topics=("syria",), cadence="daily")
    world.add_readers(2, topics=("egypt",), cadence="daily", start=10)
    world.add_story("قديم", breaking=True, published_at=utc(2026, 6, 1, 3))  # before the window
    world.add_story("مصر", topic="egypt", published_at=utc(2026, 6, 1, 12))  # another topic
    for hour, breaking in [(5, False), (6, True), (7, False), (8, True), (9, False)]:
        world.add_story(f"{hour:02d}", breaking=breaking, published_at=utc(2026, 6, 1, hour))
    first = tick(world, utc(2026, 6, 2, 4))
    # A first edition looks back one period. Breaking first, then newest; digest_story_limit=3.
    assert titles(world, first[0]) == ["08", "06", "09"]
    assert len(world.deliveries(first[0])) == 3  # the syria readers only
    assert world.dispatcher.sent != []
    world.drain(world.sender())

    # Nothing new: skipped, with no deliveries and nothing queued.
    empty = tick(world, utc(2026, 6, 3, 4))
    edition = world.edition(empty[0])
    assert (edition.status, edition.status_reason) == (
        "skipped",
        "no new stories since the last digest",
    )
    assert world.deliveries(empty[0]) == [] and world.dispatcher.sent == []

    # The site moves a sent story's date forward: it is not sent a second time.
    with world.engine.begin() as conn:
        conn.execute(
            update(Story).where(Story.title == "08").values(published_at=utc(2026, 6, 3, 8))
        )
    world.add_story("جديد", breaking=False, published_at=utc(2026, 6, 3, 9))
    third = tick(world, utc(2026, 6, 4, 4))
    assert titles(world, third[0]) == ["جديد"]


def test_pause_resume_and_remove(world: World) -> None:
    schedule_id = add(world, utc(2026, 2, 1))
    with Session(world.engine) as session:
        schedules.set_enabled(session, schedule_id, False)
        session.commit()
    assert tick(world, utc(2026, 2, 2, 6)) == []
    with Session(world.engine) as session:  # resumed after the 3rd's slot: not sent late
        schedules.set_enabled(session, schedule_id, True, now=lambda: utc(2026, 2, 3, 6))
        session.commit()
    assert tick(world, utc(2026, 2, 3, 6)) == []
    assert len(tick(world, utc(2026, 2, 4, 5))) == 1
    with Session(world.engine) as session:
        schedules.remove_schedule(session, schedule_id)
        session.commit()
        assert schedules.list_schedules(session) == []
    assert [(sid, due) for sid, due, _ in scheduled(world)] == [(None, utc(2026, 2, 4, 5))]
    with Session(world.engine) as session, pytest.raises(ValueError, match="no schedule"):
        schedules.set_enabled(session, schedule_id, True)


class RacingService(Service):
    """Holds every caller at a barrier just before creating the edition: a real race."""

    barrier: threading.Barrier

    def send_digest(self, *args: Any, **kwargs: Any) -> Started:
        self.barrier.wait(timeout=20)
        return super().send_digest(*args, **kwargs)


def race_two_beats(world: World, url: str) -> list[list[int]]:
    barrier = threading.Barrier(2)
    results: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def beat(index: int) -> None:
        engine = make_engine(url)  # a process of its own, as far as the database can tell
        service = RacingService(engine, world.settings, world.dispatcher, world.service.renderer)
        service.barrier = barrier
        try:
            results[index] = schedules.tick(
                engine, world.settings, service, now=lambda: utc(2026, 7, 1, 4, 0, 5)
            )
        except BaseException as exc:  # reported in the test thread
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=beat, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_two_beats_racing_create_one_edition(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer.schedules")
    add(world, utc(2026, 6, 30))
    world.add_readers(3, topics=("syria",), cadence="daily")
    world.add_story("خبر", published_at=utc(2026, 7, 1, 2))
    results = race_two_beats(world, world.settings.database)
    assert sorted(len(r) for r in results) == [0, 1]
    assert "exists already" in caplog.text  # the loser hit the unique (schedule, due) pair
    assert len(scheduled(world)) == 1
    with Session(world.engine) as session:
        assert len(session.scalars(select(Delivery)).all()) == 3
        assert session.scalar(select(Schedule.last_due_at)) == utc(2026, 7, 1, 4)


@pytest.fixture
def pg_world(world: World) -> Iterator[World]:
    """The same world on a fresh PostgreSQL database (what production runs)."""
    need_service("PostgreSQL", lambda: psycopg.connect(pg_admin_url(), connect_timeout=3).close())
    url = create_pg_database()
    try:
        upgrade(url)
        engine = make_engine(url)
        with Session(engine) as session:
            ensure_topics(session)
            session.commit()
        settings = world.settings.model_copy(update={"database_url": url})
        service = Service(engine, settings, world.dispatcher, world.service.renderer)
        yield World(settings, engine, world.dispatcher, service, world.clock)
        engine.dispose()
    finally:
        drop_pg_database(url)


@pytest.mark.postgres
def test_two_beats_racing_on_postgresql_create_one_edition(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer.schedules")
    add(pg_world, utc(2026, 6, 30))
    pg_world.add_readers(3, topics=("syria",), cadence="daily")
    pg_world.add_story("خبر", published_at=utc(2026, 7, 1, 2))
    results = race_two_beats(pg_world, pg_world.settings.database)
    assert sorted(len(r) for r in results) == [0, 1]
    assert "exists already" in caplog.text  # the loser hit the unique (schedule, due) pair
    # And the same beat ticking twice more, from a third engine, changes nothing.
    assert tick(pg_world, utc(2026, 7, 1, 4, 1)) == []
    rows = scheduled(pg_world)
    assert [(due, status) for _, due, status in rows] == [(utc(2026, 7, 1, 4), "sending")]
    with Session(pg_world.engine) as session:
        assert len(session.scalars(select(Delivery)).all()) == 3


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from use_data_dir(tmp_path, monkeypatch)


def mailer(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def test_schedule_commands(cli_data: Path) -> None:
    mailer("db", "upgrade")
    added = mailer(
        "schedule", "add", "--topic", "syria", "--cadence", "daily", "--at", "07:00",
        "--tz", "Africa/Cairo",
    )  # fmt: skip
    lines = added.stdout.splitlines()
    assert lines[0] == "1"  # scripts take the id from the first line
    assert lines[1] == "daily syria at 07:00 Africa/Cairo"
    assert [line.split()[0] for line in lines[2:]] == ["next:"] * 3

    weekly = mailer(
        "schedule", "add", "--topic", "egypt", "--cadence", "weekly", "--at", "09:00",
        "--weekdays", "sun", "--tz", "Europe/London", "--json",
    )  # fmt: skip
    data = json.loads(weekly.stdout)
    assert (data["id"], data["weekdays"], data["timezone"]) == (2, "sun", "Europe/London")
    assert all(datetime.fromisoformat(t).strftime("%a") == "Sun" for t in data["next_runs"])
    cron = mailer("schedule", "add", "--topic", "economy", "--cron", "0 7 * * sun-thu", "--json")
    assert json.loads(cron.stdout)["cron"] == "0 7 * * sun-thu"

    refused = mailer(
        "schedule", "add", "--topic", "syria", "--at", "07:00", "--tz", "Cairo", code=1
    )
    assert "unknown time zone 'Cairo'" in refused.stderr

    assert mailer("schedule", "pause", "1").stdout.splitlines() == ["1", "paused"]
    listed = json.loads(mailer("schedule", "list", "--json").stdout)
    assert [(s["id"], s["enabled"], len(s["next_runs"])) for s in listed] == [
        (1, False, 0), (2, True, 3), (3, True, 3),
    ]  # fmt: skip
    assert mailer("schedule", "resume", "1").stdout.splitlines() == ["1", "resumed"]
    assert mailer("schedule", "remove", "2").stdout.splitlines() == ["2", "removed"]
    assert "no schedule with id 2" in mailer("schedule", "remove", "2", code=1).stderr
    text = mailer("schedule", "list").stdout
    assert "egypt" not in text and "syria" in text and "economy" in text
    # Just created, so nothing is due yet (the beat runs the same tick every few seconds).
    assert json.loads(mailer("schedule", "tick", "--json").stdout) == {"editions": []}
