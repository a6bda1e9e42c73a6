"""Content and sending commands: db, stories, subscribers, alert, digest, editions, demo."""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import audit, db, editions, migrate, operations, stories
from mailer.cli import app, console, emit, err, fail, service, settings
from mailer.dispatch import load_dispatcher
from mailer.editions import EditionError
from mailer.models import (
    Cadence,
    Edition,
    EditionStatus,
    Story,
    Subscriber,
    SubscriberStatus,
    Topic,
)
from mailer.subscribers import (
    ReaderRow,
    add_reader,
    export_readers,
    import_readers,
    read_csv,
    write_csv,
)
from mailer.transport import SmtpConfig, SmtpTransport

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

db_app = typer.Typer(help="Database schema.")
stories_app = typer.Typer(help="Stories that alerts and digests are made of.")
subscribers_app = typer.Typer(help="Readers.")
digest_app = typer.Typer(help="Digests of the stories since the last one.")
editions_app = typer.Typer(help="Watch and control sends.")
app.add_typer(db_app, name="db")
app.add_typer(stories_app, name="stories")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(digest_app, name="digest")
app.add_typer(editions_app, name="editions")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (safe to run again)."""
    migrate.upgrade(settings().database)
    with Session(db.get_engine()) as session:  # the newsroom's topics, so readers can subscribe
        stories.ensure_topics(session)
        session.commit()
    console.print("database is up to date")


@stories_app.command("add")
def stories_add(
    title: Annotated[str, typer.Option()],
    url: Annotated[str, typer.Option()],
    topic: Annotated[str, typer.Option()],
    summary: Annotated[str, typer.Option()] = "",
    breaking: Annotated[bool, typer.Option("--breaking")] = False,
    published_at: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"])
    ] = None,
    body_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a story (or update the one with the same URL)."""
    from datetime import UTC

    when = published_at.replace(tzinfo=published_at.tzinfo or UTC) if published_at else None
    body = body_file.read_text(encoding="utf-8") if body_file else ""
    with Session(db.get_engine()) as session:
        try:
            story, created = stories.upsert_story(
                session,
                stories.StoryInput(
                    title=title,
                    url=url,
                    topic=topic,
                    summary=summary,
                    body_html=body,
                    is_breaking=breaking,
                    published_at=when,
                ),
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
        session.commit()
        emit(
            as_json,
            {"id": story.id, "created": created},
            [str(story.id), "added" if created else "updated"],
        )


@stories_app.command("list")
def stories_list(limit: int = 20, as_json: JsonOpt = False) -> None:
    with Session(db.get_engine()) as session:
        rows = session.scalars(select(Story).order_by(Story.published_at.desc()).limit(limit))
        items = [
            {
                "id": s.id,
                "topic": s.topic.slug,
                "breaking": s.is_breaking,
                "published_at": s.published_at.isoformat(),
                "title": s.title,
            }
            for s in rows
        ]
    emit(
        as_json,
        items,
        [
            f"{i['id']:>5}  {i['topic']:<8} {'عاجل ' if i['breaking'] else ''}{i['title']}"
            for i in items
        ],
    )


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    name: str = "",
    topics: Annotated[str, typer.Option(help="Slugs separated by ';'.")] = "breaking",
    cadence: Cadence = Cadence.INSTANT,
    as_json: JsonOpt = False,
) -> None:
    """Add one confirmed reader."""
    try:
        subscriber_id = add_reader(
            db.get_engine(),
            settings(),
            email,
            name=name,
            topics=tuple(t for t in topics.split(";") if t),
            cadence=cadence,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    emit(as_json, {"id": subscriber_id}, [str(subscriber_id)])


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    consented: Annotated[
        bool,
        typer.Option(
            "--consented",
            help="Readers already opted in; without it each new reader is "
            "pending and gets a confirmation email (on the bulk queue).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import readers from CSV: email, name, topics (a;b), cadence, locale, timezone."""
    s = settings()
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.completed} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as bar:
        task = bar.add_task("import", total=None)
        try:
            report = import_readers(
                db.get_engine(),
                read_csv(file),
                s,
                consented=consented,
                source=f"import:{file.name}",
                progress=lambda n: bar.advance(task, n),
                dispatcher=None if consented else load_dispatcher(s.dispatcher),
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
    data = {
        "read": report.read,
        "added": report.added,
        "existing": report.existing,
        "confirmations": report.confirmations,
        "errors": [{"line": line, "error": e} for line, e in report.errors],
    }
    summary = f"{report.added} added, {report.existing} already known, {len(report.errors)} refused"
    if not consented:
        summary += f", {report.confirmations} confirmation emails queued"
    emit(
        as_json,
        data,
        [summary] + [f"  line {line}: {e}" for line, e in report.errors[:50]],
    )
    if len(report.errors) > 50 and not as_json:
        console.print(f"  … and {len(report.errors) - 50} more (--json lists them all)")


@subscribers_app.command("export")
def subscribers_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Default: stdout.")
    ] = None,
    status: Annotated[
        SubscriberStatus | None, typer.Option(help="Only readers with this status.")
    ] = None,
) -> None:
    """Every reader as CSV in the import's columns (plus status and consent), streaming."""
    rows = export_readers(db.get_engine(), status=status)
    if output is None:
        write_csv(rows, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        count = write_csv(rows, handle)
    err.print(f"{count} rows written to {output}", highlight=False)


@subscribers_app.command("list")
def subscribers_list(limit: int = 20, as_json: JsonOpt = False) -> None:
    with Session(db.get_engine()) as session:
        total = session.scalar(select(func.count()).select_from(Subscriber))
        rows = session.scalars(select(Subscriber).order_by(Subscriber.id).limit(limit)).all()
        items = [{"id": s.id, "email": s.email, "name": s.name, "status": s.status} for s in rows]
    emit(
        as_json,
        {"total": total, "subscribers": items},
        [f"{total} readers"] + [f"{i['id']:>6}  {i['status']:<12} {i['email']}" for i in items],
    )


def _wait(edition_id: int, as_json: bool) -> None:
    """Show a progress bar until the edition has no open deliveries."""
    with Progress(
        TextColumn(f"edition {edition_id}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as bar:
        task = bar.add_task("send", total=None, detail="")
        while True:
            with Session(db.get_engine()) as session:
                edition = session.get(Edition, edition_id)
                assert edition is not None
                state = editions.progress(session, edition)
            bar.update(
                task,
                total=state.total,
                completed=state.done,
                detail=" ".join(f"{k}={v}" for k, v in sorted(state.counts.items())),
            )
            if state.status not in (EditionStatus.SENDING, EditionStatus.PLANNED):
                return
            time.sleep(0.5)


@app.command("alert")
def alert(
    story_id: int,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until done.")] = False,
    test_to: Annotated[
        list[str] | None, typer.Option("--test-to", help="Seed address to test first.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the story as a breaking-news alert to every alert subscriber (once per story)."""
    if test_to:
        _test_alert(story_id, test_to)
    try:
        started = service().trigger_alert(story_id)
    except EditionError as exc:
        raise fail(str(exc)) from exc
    if started.created:
        _audit("alert.trigger", f"edition:{started.edition_id}", {"story_id": story_id})
    emit(
        as_json,
        started.__dict__,
        [
            str(started.edition_id),
            f"{started.planned} readers, {started.status}"
            if started.created
            else f"already triggered (edition {started.edition_id} is {started.status})",
        ],
    )
    if wait:
        _wait(started.edition_id, as_json)


def _test_alert(story_id: int, addresses: list[str]) -> None:
    """Send the alert to seed addresses first (no deliveries; audited), then carry on."""
    transport = SmtpTransport(SmtpConfig.from_url(settings().smtp_url))
    try:
        results = operations.test_send_alert(
            db.get_engine(),
            settings(),
            transport,
            service().renderer,
            story_id,
            addresses,
            audit.cli_actor(),
        )
    except (operations.NotFound, ValueError) as exc:
        raise fail(str(exc)) from exc
    finally:
        transport.close()
    for result in results:
        err.print(f"test to {result.address}: {result.outcome} {result.code or ''} {result.text}")


@digest_app.command("send")
def digest_send(
    topic: str,
    cadence: Annotated[Cadence, typer.Option()] = Cadence.DAILY,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send a digest of the topic's stories since its last digest at this cadence."""
    try:
        started = service().send_digest(topic, cadence)
    except EditionError as exc:
        raise fail(str(exc)) from exc
    _audit("digest.send", f"edition:{started.edition_id}", {"topic": topic, "cadence": cadence})
    emit(
        as_json,
        started.__dict__,
        [str(started.edition_id), f"{started.planned} readers, {started.status}"],
    )
    if wait and started.status != EditionStatus.SKIPPED:
        _wait(started.edition_id, as_json)


@editions_app.command("list")
def editions_list(limit: int = 20, as_json: JsonOpt = False) -> None:
    with Session(db.get_engine()) as session:
        rows = session.scalars(select(Edition).order_by(Edition.id.desc()).limit(limit)).all()
        items = [
            {
                "id": e.id,
                "kind": e.kind,
                "status": e.status,
                "topic": e.topic.slug,
                "subject": e.subject,
                "created_at": e.created_at.isoformat(),
            }
            for e in rows
        ]
    emit(
        as_json,
        items,
        [f"{i['id']:>5}  {i['kind']:<6} {i['status']:<9} {i['subject']}" for i in items],
    )


@editions_app.command("show")
def editions_show(edition_id: int, as_json: JsonOpt = False) -> None:
    """Status, progress and counts (sent, deferred, failed…) of one edition."""
    with Session(db.get_engine()) as session:
        edition = session.get(Edition, edition_id)
        if edition is None:
            raise fail(f"no edition with id {edition_id}")
        state = editions.progress(session, edition)
        data = {
            "id": edition.id,
            "kind": edition.kind,
            "status": edition.status,
            "reason": edition.status_reason,
            "subject": edition.subject,
            "total": state.total,
            "done": state.done,
            "counts": state.counts,
            "started_at": edition.started_at,
            "finished_at": edition.finished_at,
        }
    counts = "  ".join(f"{k}: {v}" for k, v in sorted(state.counts.items()))
    emit(
        as_json,
        data,
        [
            f"{edition_id}  {data['kind']}  {data['status']}  {data['subject']}",
            f"progress: {state.done}/{state.total} ({state.fraction:.0%})",
            counts,
        ],
    )


def _audit(action: str, target: str, details: dict[str, object] | None = None) -> None:
    with db.get_engine().begin() as conn:
        audit.record(conn, audit.cli_actor(), action, target, details or {})


def _control(action: str, edition_id: int) -> None:
    try:
        getattr(service(), action)(edition_id)
    except EditionError as exc:
        raise fail(str(exc)) from exc
    _audit(f"edition.{action}", f"edition:{edition_id}")
    console.print(f"{edition_id}\n{action}d" if action != "cancel" else f"{edition_id}\ncancelled")


@editions_app.command("pause")
def editions_pause(edition_id: int) -> None:
    _control("pause", edition_id)


@editions_app.command("resume")
def editions_resume(edition_id: int) -> None:
    _control("resume", edition_id)


@editions_app.command("cancel")
def editions_cancel(edition_id: int) -> None:
    _control("cancel", edition_id)


ARABIC_NAMES = (
    "أحمد",
    "فاطمة",
    "محمد",
    "مريم",
    "خالد",
    "نور",
    "يوسف",
    "ليلى",
    "عمر",
    "سارة",
    "حسن",
    "هدى",
    "علي",
    "رنا",
    "كريم",
    "",
)


def load_demo(readers: int = 300, seed: int = 7) -> tuple[int, int]:
    """Topics, the sample stories and ``readers`` sample readers, idempotently."""
    engine = db.get_engine()
    with Session(engine) as session:
        loaded = stories.load_samples(session)
        session.commit()
        topics = list(session.scalars(select(Topic.slug)))
    pick = random.Random(seed)
    rows = [
        ReaderRow(
            line=i,
            email=f"reader{i:05d}@example.com",
            name=pick.choice(ARABIC_NAMES),
            topics=("breaking",),
        )
        for i in range(1, readers + 1)
    ]
    import_readers(engine, rows, settings(), consented=True, source="demo")
    digests = [
        ReaderRow(
            line=i,
            email=f"reader{i:05d}@example.com",
            topics=(pick.choice([t for t in topics if t != "breaking"]),),
            cadence=Cadence.DAILY,
        )
        for i in range(1, readers + 1)
        if i % 3 == 0
    ]
    import_readers(engine, digests, settings(), consented=True, source="demo")
    return len(loaded), readers


@app.command("demo")
def demo(readers: int = 300, as_json: JsonOpt = False) -> None:
    """Load the sample stories and sample readers into the current database."""
    migrate.upgrade(settings().database)
    count, people = load_demo(readers)
    emit(
        as_json,
        {"stories": count, "readers": people},
        [f"{count} sample stories, {people} sample readers"],
    )
