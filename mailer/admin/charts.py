"""The readers' growth chart, drawn server-side as inline SVG (no script, no external library).

:func:`growth` reads new readers per day in SQL (one grouped query, whatever the number of
readers); :func:`layout` turns the series into SVG geometry for the template. Time runs from
right to left, as the page reads: the newest day is at the left edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, func, select

from mailer.models import Subscriber

WIDTH, HEIGHT, PAD = 640, 220, 28


@dataclass(frozen=True)
class Day:
    day: date
    new: int
    total: int


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: Day


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    line: str  # polyline points of the running total
    top: int  # the running total at the top of the scale
    top_new: int
    first: Day
    last: Day


def growth(conn: Connection, now: datetime, days: int = 30) -> list[Day]:
    """New readers per UTC day over the last ``days`` days, with the running total."""
    start = (now - timedelta(days=days - 1)).date()
    since = datetime.combine(start, datetime.min.time(), tzinfo=now.tzinfo)
    before = conn.scalar(select(func.count()).where(Subscriber.created_at < since)) or 0
    day = func.date(Subscriber.created_at)
    rows = conn.execute(
        select(day, func.count()).where(Subscriber.created_at >= since).group_by(day)
    ).all()
    # SQLite answers "YYYY-MM-DD" strings, PostgreSQL dates: compare them as text.
    per_day = {str(d)[:10]: int(n) for d, n in rows}
    series, total = [], int(before)
    for offset in range(days):
        current = start + timedelta(days=offset)
        new = per_day.get(current.isoformat(), 0)
        total += new
        series.append(Day(current, new, total))
    return series


def layout(series: list[Day]) -> Chart:
    """Bars of new readers per day and a line of the running total, newest at the left."""
    assert series, "a chart needs at least one day"
    top = max(max(d.total for d in series), 1)
    top_new = max(max(d.new for d in series), 1)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / len(series)
    bars, points = [], []
    for index, day in enumerate(series):
        # Mirrored: index 0 (the oldest day) at the right.
        left = WIDTH - PAD - (index + 1) * step
        height = inner_h * day.new / top_new
        bars.append(
            Bar(
                round(left + step * 0.15, 1),
                round(HEIGHT - PAD - height, 1),
                round(step * 0.7, 1),
                round(height, 1),
                day,
            )
        )
        y = HEIGHT - PAD - inner_h * day.total / top
        points.append(f"{left + step / 2:.1f},{y:.1f}")
    return Chart(WIDTH, HEIGHT, bars, " ".join(points), top, top_new, series[0], series[-1])
