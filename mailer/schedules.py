"""Digest schedules kept in the database, and the beat's tick that turns them into editions.

A schedule is a wall-clock time (``at_time`` "HH:MM", optionally on some ``weekdays``) or a
five-field cron expression, read in the schedule's IANA time zone. Wall-clock rules across
daylight-saving changes:

- a local time that does not exist (clocks spring forward over it) fires at the first instant
  after the gap, i.e. the moment of the change (01:30 Europe/London on 29 March 2026 fires at
  02:00 BST = 01:00 UTC); several slots inside one gap fire once;
- a local time that happens twice (clocks fall back) fires once, at its first occurrence.

The tick is idempotent: an edition is unique per (schedule, due time), so any number of beat
processes or repeated ticks create it once. After an outage only the latest missed slot fires
(one catch-up digest; its window still starts at the schedule's last sent edition).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import Engine, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from mailer.config import Settings
from mailer.models import Cadence, Edition, Schedule, Topic, utcnow
from mailer.service import Service

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Wider than any change of UTC offset, so scanning wall-clock times from a local time this far
# before (or after) an instant never misses a slot that maps next to it.
_MARGIN = timedelta(hours=3)
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


# -- validation --------------------------------------------------------------------------------


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Africa/Cairo)"
        ) from exc


def parse_at(text: str) -> str:
    """'7:00' or '07:00' → '07:00'."""
    match = _AT.match(text.strip())
    if not match:
        raise ValueError(f"time of day {text!r} is not HH:MM (00:00 to 23:59)")
    return f"{int(match[1]):02d}:{match[2]}"


def parse_weekdays(text: str) -> list[int]:
    """'mon,thu' → [0, 3]; ranges wrap ('sun-thu', the Arab working week → [0, 1, 2, 3, 6]).

    Monday is 0, as in :meth:`date.weekday`; full English names are accepted too.
    """
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        start, end = _weekday(first), _weekday(last or first)
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    return sorted(days)


def _weekday(name: str) -> int:
    for index, full in enumerate(_FULL_NAMES):
        if len(name) >= 3 and full.startswith(name):
            return index
    raise ValueError(f"weekday {name!r} is not one of {','.join(WEEKDAYS)}")


def check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
        raise ValueError(
            f"cron expression {expression!r} is not five valid fields (m h dom mon dow)"
        )
    try:  # valid fields can still never match (30 February)
        croniter(" ".join(fields), datetime(2026, 1, 1)).get_next(datetime)
    except ValueError as exc:
        raise ValueError(f"cron expression {expression!r} never fires") from exc
    return " ".join(fields)


# -- wall-clock arithmetic ---------------------------------------------------------------------


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in ``zone`` as a UTC instant, by the module's DST rules."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first  # exists (fold=0 is the first occurrence of an ambiguous time)
    # In a gap: fold=0 maps with the offset before the change (past the gap) and fold=1 with
    # the one after (before the gap). Bisect between them for the moment of the change.
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= local:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _wall_times(schedule: Schedule, start: datetime, forward: bool) -> Iterator[datetime]:
    """The schedule's naive local slots from ``start`` on, forwards or backwards in time."""
    if schedule.cron:
        it = croniter(schedule.cron, start)
        while True:
            yield it.get_next(datetime) if forward else it.get_prev(datetime)
    assert schedule.at_time is not None
    at = time.fromisoformat(schedule.at_time)
    days = set(parse_weekdays(schedule.weekdays)) if schedule.weekdays else set(range(7))
    step = timedelta(days=1 if forward else -1)
    day = start.date()
    while True:
        slot = datetime.combine(day, at)
        if day.weekday() in days and (slot >= start if forward else slot <= start):
            yield slot
        day += step


def next_runs(schedule: Schedule, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` UTC instants strictly after ``after`` at which the schedule fires."""
    zone = parse_zone(schedule.timezone)
    start = after.astimezone(zone).replace(tzinfo=None) - _MARGIN
    runs: list[datetime] = []
    if count <= 0:
        return runs
    for local in _wall_times(schedule, start, forward=True):
        instant = to_utc(local, zone)
        # Mapping wall time to UTC never goes backwards; slots in one gap share an instant.
        if instant > after and (not runs or instant > runs[-1]):
            runs.append(instant)
            if len(runs) == count:
                return runs
    return runs  # pragma: no cover (the generators are endless)


def previous_run(schedule: Schedule, at_or_before: datetime) -> datetime:
    """The latest UTC instant <= ``at_or_before`` at which the schedule fires."""
    zone = parse_zone(schedule.timezone)
    start = at_or_before.astimezone(zone).replace(tzinfo=None) + _MARGIN
    for local in _wall_times(schedule, start, forward=False):
        instant = to_utc(local, zone)
        if instant <= at_or_before:
            return instant
    raise AssertionError("unreachable")  # pragma: no cover


def due_at(schedule: Schedule, now: datetime) -> datetime | None:
    """The slot to fire now: the latest one <= ``now`` after the last fired (or creation).

    After an outage that spans several slots this is only the latest: one catch-up digest.
    """
    latest = previous_run(schedule, now)
    baseline = max(schedule.created_at, schedule.last_due_at or schedule.created_at)
    return latest if latest > baseline else None


def describe(schedule: Schedule) -> str:
    when = f"cron {schedule.cron!r}" if schedule.cron else f"at {schedule.at_time}"
    days = f" on {schedule.weekdays}" if schedule.weekdays else ""
    return f"{schedule.cadence} {schedule.topic.slug} {when}{days} {schedule.timezone}"


# -- management (CLI and API) ------------------------------------------------------------------


def add_schedule(
    session: Session,
    *,
    topic: str,
    cadence: str,
    at: str | None,
    timezone: str,
    weekdays: str | None = None,
    cron: str | None = None,
    now: Clock = utcnow,
) -> Schedule:
    """Validate and add a schedule (ValueError with a clear message on bad input)."""
    found = session.scalar(select(Topic).where(Topic.slug == topic))
    if found is None:
        raise ValueError(f"unknown topic {topic!r}")
    if cadence not in (Cadence.DAILY, Cadence.WEEKLY):
        raise ValueError(f"cadence is daily or weekly, not {cadence!r}")
    if (at is None) == (cron is None):
        raise ValueError("give a time of day (--at HH:MM) or a cron expression, not both")
    if cron is not None and weekdays:
        raise ValueError("weekdays go inside the cron expression")
    if cadence == Cadence.WEEKLY and at is not None and not weekdays:
        raise ValueError("a weekly schedule needs weekdays (e.g. fri) or a cron expression")
    parse_zone(timezone)
    schedule = Schedule(
        topic_id=found.id,
        cadence=cadence,
        at_time=parse_at(at) if at is not None else None,
        weekdays=",".join(WEEKDAYS[d] for d in parse_weekdays(weekdays)) if weekdays else None,
        cron=check_cron(cron) if cron is not None else None,
        timezone=timezone,
        enabled=True,
        created_at=now(),
    )
    session.add(schedule)
    session.flush()
    return schedule


def list_schedules(session: Session) -> list[Schedule]:
    query = select(Schedule).options(joinedload(Schedule.topic)).order_by(Schedule.id)
    return list(session.scalars(query))


def get_schedule(session: Session, schedule_id: int) -> Schedule:
    schedule = session.get(Schedule, schedule_id, options=[joinedload(Schedule.topic)])
    if schedule is None:
        raise ValueError(f"no schedule with id {schedule_id}")
    return schedule


def set_enabled(session: Session, schedule_id: int, enabled: bool, now: Clock = utcnow) -> Schedule:
    """Pause or resume. Resuming does not fire for the slots that passed while paused."""
    schedule = get_schedule(session, schedule_id)
    if enabled and not schedule.enabled:
        moment = now()
        latest = previous_run(schedule, moment)
        schedule.last_due_at = max(latest, schedule.last_due_at or latest)
    schedule.enabled = enabled
    session.flush()
    return schedule


def remove_schedule(session: Session, schedule_id: int) -> None:
    """Delete the schedule; its past editions stay (as digests of their topic and cadence)."""
    schedule = get_schedule(session, schedule_id)
    session.execute(
        update(Edition).where(Edition.schedule_id == schedule_id).values(schedule_id=None)
    )
    session.delete(schedule)
    session.flush()


# -- the beat ----------------------------------------------------------------------------------


def tick(engine: Engine, settings: Settings, service: Service, now: Clock = utcnow) -> list[int]:
    """Create and start the digest of every enabled schedule that is due; returns edition ids.

    Safe to run from several beat processes at once: the unique (schedule, due time) pair lets
    one of them create the edition and turns the others' attempts into no-ops.
    """
    moment = now()
    with Session(engine) as session:
        due: list[tuple[int, str, str, datetime, bool]] = []
        for schedule in session.scalars(
            select(Schedule).options(joinedload(Schedule.topic)).where(Schedule.enabled)
        ):
            slot = due_at(schedule, moment)
            if slot is None:
                continue
            done = session.scalar(
                select(exists().where(Edition.schedule_id == schedule.id, Edition.due_at == slot))
            )
            due.append((schedule.id, schedule.topic.slug, schedule.cadence, slot, bool(done)))
    created: list[int] = []
    for schedule_id, topic, cadence, slot, done in due:
        if not done:
            try:
                started = service.send_digest(topic, cadence, schedule_id=schedule_id, due_at=slot)
                created.append(started.edition_id)
            except IntegrityError:
                log.info("schedule %s: the digest due at %s exists already", schedule_id, slot)
            except Exception:
                # One broken schedule must not stop the others; it is retried next tick.
                log.exception("schedule %s: the digest due at %s failed", schedule_id, slot)
                continue
        _mark_fired(engine, schedule_id, slot)
    return created


def _mark_fired(engine: Engine, schedule_id: int, slot: datetime) -> None:
    # Never moves backwards, whichever of several beats gets here last.
    with Session(engine) as session, session.begin():
        session.execute(
            update(Schedule)
            .where(
                Schedule.id == schedule_id,
                or_(Schedule.last_due_at.is_(None), Schedule.last_due_at < slot),
            )
            .values(last_due_at=slot)
        )
