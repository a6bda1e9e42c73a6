"""Newsroom commands: digest schedules, feed imports and polled feeds (issue "Newsroom side")."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import db, feeds, schedules
from mailer.cli import app, console, emit, fail, service, settings
from mailer.cli.commands import JsonOpt, stories_app
from mailer.models import Cadence, Feed, Schedule, Topic, utcnow

schedule_app = typer.Typer(help="Digests on schedule (wall-clock times in a time zone).")
feeds_app = typer.Typer(help="Site feeds polled for new and edited stories.")
app.add_typer(schedule_app, name="schedule")
app.add_typer(feeds_app, name="feeds")


def _schedule_data(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "topic": schedule.topic.slug,
        "cadence": schedule.cadence,
        "at": schedule.at_time,
        "weekdays": schedule.weekdays,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "last_due_at": schedule.last_due_at.isoformat() if schedule.last_due_at else None,
        "next_runs": [
            t.isoformat()
            for t in schedules.next_runs(schedule, utcnow(), 3 if schedule.enabled else 0)
        ],
    }


@schedule_app.command("add")
def schedule_add(
    topic: Annotated[str, typer.Option(help="Topic slug, e.g. syria.")],
    cadence: Annotated[Cadence, typer.Option(help="daily or weekly.")] = Cadence.DAILY,
    at: Annotated[str | None, typer.Option(help="Local time of day, HH:MM.")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone.")] = "Africa/Cairo",
    weekdays: Annotated[str | None, typer.Option(help="e.g. mon,thu or sun-thu.")] = None,
    cron: Annotated[str | None, typer.Option(help="Five-field cron, in --tz.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a digest schedule; prints its id, then when it fires next."""
    with Session(db.get_engine()) as session:
        try:
            schedule = schedules.add_schedule(
                session,
                topic=topic,
                cadence=cadence,
                at=at,
                timezone=tz,
                weekdays=weekdays,
                cron=cron,
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
        data = _schedule_data(schedule)
        lines = [str(schedule.id), schedules.describe(schedule)]
    emit(as_json, data, lines + [f"next: {t}" for t in data["next_runs"]])


@schedule_app.command("list")
def schedule_list(as_json: JsonOpt = False) -> None:
    """Every schedule, with its next runs (UTC)."""
    with Session(db.get_engine()) as session:
        found = schedules.list_schedules(session)
        items = [_schedule_data(s) for s in found]
        lines = [
            f"{s.id:>4}  {'on ' if s.enabled else 'off'}  {schedules.describe(s)}"
            + (f"  next {items[i]['next_runs'][0]}" if items[i]["next_runs"] else "")
            for i, s in enumerate(found)
        ]
    emit(as_json, items, lines or ["no schedules"])


def _set(schedule_id: int, enabled: bool, as_json: bool) -> None:
    with Session(db.get_engine()) as session:
        try:
            schedule = schedules.set_enabled(session, schedule_id, enabled)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
        data = _schedule_data(schedule)
    emit(as_json, data, [str(schedule_id), "resumed" if enabled else "paused"])


@schedule_app.command("pause")
def schedule_pause(schedule_id: int, as_json: JsonOpt = False) -> None:
    """Stop firing (nothing is sent for the slots that pass while paused)."""
    _set(schedule_id, False, as_json)


@schedule_app.command("resume")
def schedule_resume(schedule_id: int, as_json: JsonOpt = False) -> None:
    """Fire again from the next slot on."""
    _set(schedule_id, True, as_json)


@schedule_app.command("remove")
def schedule_remove(schedule_id: int, as_json: JsonOpt = False) -> None:
    """Delete a schedule (its past editions stay)."""
    with Session(db.get_engine()) as session:
        try:
            schedules.remove_schedule(session, schedule_id)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
    emit(as_json, {"id": schedule_id, "removed": True}, [str(schedule_id), "removed"])


@schedule_app.command("tick")
def schedule_tick(as_json: JsonOpt = False) -> None:
    """Start the digests that are due now (what the beat does every few seconds)."""
    created = schedules.tick(db.get_engine(), settings(), service())
    emit(as_json, {"editions": created}, [str(i) for i in created] or ["nothing is due"])


def _report(as_json: bool, result: feeds.FeedResult) -> None:
    summary = (
        "not modified"
        if result.not_modified
        else f"{result.added} added, {result.updated} updated, {result.unchanged} unchanged, "
        f"{result.duplicates} duplicates, {len(result.errors)} refused"
    )
    emit(
        as_json,
        result.__dict__,
        [f"{result.source}: {summary}"] + [f"  {e}" for e in result.errors],
    )


@stories_app.command("import-feed")
def stories_import_feed(
    source: Annotated[str, typer.Argument(help="An http(s) URL or a file (RSS or Atom).")],
    topic: Annotated[str, typer.Option(help="Topic slug of the imported stories.")],
    as_json: JsonOpt = False,
) -> None:
    """Import a feed: new stories added, edited ones updated in place, repeats once."""
    with Session(db.get_engine()) as session:
        try:
            result = feeds.import_feed(session, source, topic, settings())
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
    _report(as_json, result)


@feeds_app.command("add")
def feeds_add(
    url: str,
    topic: Annotated[str, typer.Option(help="Topic slug of its stories.")],
    as_json: JsonOpt = False,
) -> None:
    """Poll this feed on schedule (the URL must pass the SSRF guard)."""
    with Session(db.get_engine()) as session:
        try:
            feed = feeds.add_feed(session, url, topic, settings())
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
        emit(as_json, {"id": feed.id, "url": feed.url, "topic": topic}, [str(feed.id), url])


@feeds_app.command("list")
def feeds_list(as_json: JsonOpt = False) -> None:
    with Session(db.get_engine()) as session:
        rows = session.execute(
            select(Feed, Topic.slug).join(Topic, Topic.id == Feed.topic_id).order_by(Feed.id)
        )
        items = [
            {
                "id": f.id,
                "url": f.url,
                "topic": slug,
                "enabled": f.enabled,
                "last_polled_at": f.last_polled_at.isoformat() if f.last_polled_at else None,
                "last_error": f.last_error,
            }
            for f, slug in rows
        ]
    emit(
        as_json,
        items,
        [
            f"{i['id']:>4}  {i['topic']:<8} {i['url']}"
            + (f"  error: {i['last_error']}" if i["last_error"] else "")
            for i in items
        ]
        or ["no feeds"],
    )


@feeds_app.command("poll")
def feeds_poll(
    force: Annotated[bool, typer.Option("--force", help="Also feeds polled recently.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Poll the feeds that are due now (conditional GET: unchanged feeds cost one 304)."""
    results = feeds.poll_due(db.get_engine(), settings(), min_interval=0 if force else 300)
    if as_json:
        emit(True, [r.__dict__ for r in results], [])
        return
    for result in results:
        _report(False, result)
    if not results:
        console.print("no feed is due")
