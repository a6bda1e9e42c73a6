"""Results: one row per scenario or stage, the ratios between them, a table and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table


@dataclass
class Row:
    """One line of the table. ``figure`` is the scenario's own measure (a latency, a stage
    cost, a planning time); ``target`` says what it is aimed at and ``ok`` whether it got
    there (None: no target, or not measured)."""

    scenario: str
    section: str = "throughput"
    readers: int | None = None
    messages_per_s: float | None = None
    cpu_ms_per_message: float | None = None
    peak_rss_mib: float | None = None
    figure: str = ""
    target: str = ""
    ok: bool | None = None
    values: dict[str, float] = field(default_factory=dict)

    @classmethod
    def na(cls, scenario: str, section: str, why: str) -> Row:
        return cls(scenario, section, figure=f"n/a ({why})")


@dataclass
class Ratio:
    name: str
    value: float | None
    target: float | None

    @property
    def ok(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value >= self.target


def rate(rows: list[Row], scenario: str) -> float | None:
    for row in rows:
        if row.scenario == scenario and row.messages_per_s:
            return row.messages_per_s
    return None


def ratios(rows: list[Row]) -> list[Ratio]:
    ceiling = rate(rows, "sink ceiling")
    pipelined = rate(rows, "sink ceiling, pipelined")
    ours = rate(rows, "digest end to end")
    signed = rate(rows, "digest end to end, DKIM-signed")
    naive = rate(rows, "naive baseline")

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    return [
        Ratio("ours / sink ceiling", div(ours, ceiling), 0.8),
        Ratio("signed / sink ceiling", div(signed, ceiling), 0.5),
        # Not a target of the issue: how close the service gets to a sender that pipelines.
        Ratio("ours / pipelined ceiling", div(ours, pipelined), None),
        Ratio("ours / naive baseline", div(ours, naive), 20.0),
    ]


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _mark(ok: bool | None) -> str:
    return {True: "[green]✓[/]", False: "[red]✗[/]", None: ""}[ok]


def table(rows: list[Row], title: str) -> Table:
    out = Table(title=title, title_justify="left")
    for name, justify in (
        ("scenario", "left"),
        ("readers", "right"),
        ("messages/s", "right"),
        ("CPU ms/msg", "right"),
        ("peak RSS/worker MiB", "right"),
        ("figure", "left"),
        ("target", "left"),
        ("", "center"),
    ):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    section = None
    for row in rows:
        if section is not None and row.section != section:
            out.add_section()
        section = row.section
        out.add_row(
            row.scenario,
            _num(row.readers),
            _num(row.messages_per_s),
            _num(row.cpu_ms_per_message, 2),
            _num(row.peak_rss_mib),
            row.figure,
            row.target,
            _mark(row.ok),
        )
    out.add_section()
    for ratio in ratios(rows):
        value = "—" if ratio.value is None else f"{ratio.value:.2f}×"
        target = "" if ratio.target is None else f"≥ {ratio.target:g}×"
        out.add_row(f"ratio: {ratio.name}", "", "", "", "", value, target, _mark(ratio.ok))
    return out


def print_table(rows: list[Row], title: str, console: Console | None = None) -> None:
    (console or Console(width=160)).print(table(rows, title))


def as_json(rows: list[Row], meta: dict[str, object]) -> str:
    return json.dumps(
        {
            "meta": meta,
            "rows": [asdict(r) for r in rows],
            "ratios": [
                {"name": r.name, "value": r.value, "target": r.target} for r in ratios(rows)
            ],
        },
        ensure_ascii=False,
        indent=2,
    )
