"""No enumeration: the subscribe answer does not tell what the service knows of an address.

New, pending, active and unsubscribed addresses (and suppressed ones) get the same status
and the same body, in about the same time; only the address's own mailbox tells them apart.
Run on PostgreSQL (production) and SQLite (embedded).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from mailer.readers import EVERYTHING, Scope, unsubscribe
from mailer.suppress import suppress_address
from tests.web.site import Site, drop_pg_database, pg_url, settings_for

KINDS = ("new", "pending", "active", "unsubscribed")
ROUNDS = 7


@pytest.fixture(params=["sqlite", "postgres"])
def any_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    url = pg_url() if request.param == "postgres" else ""
    built = Site(settings_for(tmp_path, url))
    try:
        yield built
    finally:
        built.engine.dispose()
        if url:
            drop_pg_database(url)


def prepare(site: Site, kind: str, address: str) -> None:
    if kind == "pending":
        site.subscribe(address)
    elif kind == "active":
        site.add_readers(address)
    elif kind == "unsubscribed":
        site.add_readers(address)
        reader = site.reader(address)
        assert reader is not None
        unsubscribe(site.engine, Scope(reader.id, 0, EVERYTHING))


def test_the_four_kinds_of_address_get_the_same_answer(any_site: Site) -> None:
    site = any_site
    addresses = {kind: [f"{kind}{i}@example.com" for i in range(ROUNDS)] for kind in KINDS}
    for kind, group in addresses.items():
        for address in group:
            prepare(site, kind, address)
    with Session(site.engine) as session:
        suppress_address(
            session.connection(), "blocked@example.com", "complaint", "test", site.settings
        )
        session.commit()
    site.deliver()
    site.transport.sent.clear()

    answers: dict[str, list[tuple[int, str, list[tuple[str, str]]]]] = {k: [] for k in KINDS}
    timings: dict[str, list[float]] = {k: [] for k in KINDS}
    for i in range(ROUNDS):  # interleaved, so load on the machine hits every kind alike
        for kind in KINDS:
            browser = site.browser()
            token = site.csrf(browser.get("/subscribe"))
            form = {"csrf_token": token, "email": addresses[kind][i], "topics": "breaking"}
            started = time.perf_counter()
            answer = browser.post("/subscribe", data=form | {"cadence": "instant"})
            timings[kind].append(time.perf_counter() - started)
            headers = sorted(
                (k, v) for k, v in answer.headers.items() if k not in ("date", "content-length")
            )
            answers[kind].append((answer.status_code, answer.text, headers))
    blocked = site.subscribe("blocked@example.com")

    distinct = {
        (status, body, tuple(headers))
        for group in answers.values()
        for status, body, headers in group
    }
    assert len(distinct) == 1, "the answer depends on the address's state"
    ((status, body, _),) = distinct
    assert status == 200 and "تحقق من بريدك" in body
    assert (blocked.status_code, blocked.text) == (status, body)

    medians = {kind: statistics.median(values) for kind, values in timings.items()}
    print({kind: f"{m * 1000:.1f} ms" for kind, m in medians.items()})
    # Same work in every branch: no kind stands out (generous: the machine is shared).
    assert max(medians.values()) < 3 * min(medians.values()) + 0.005, medians

    # The difference shows only in each address's own mailbox.
    site.deliver()
    subjects = {
        kind: {str(m["Subject"]) for a in group for m in site.inbox(a)}
        for kind, group in addresses.items()
    }
    assert all(len(s) == 1 for s in subjects.values()), subjects
    assert subjects["new"] == subjects["pending"] == subjects["unsubscribed"]
    assert "أكِّد اشتراكك" in next(iter(subjects["new"]))
    assert "مشترك بالفعل" in next(iter(subjects["active"]))
    assert site.inbox("blocked@example.com") == []
    reader = site.reader("unsubscribed0@example.com")
    assert reader is not None and reader.status == "pending"  # confirmation needed again
