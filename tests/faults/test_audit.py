"""The audit catches every way a run can break the promises (a checker that cannot fail
would prove nothing)."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from tests.faults.audit import Figures, audit


class Row(NamedTuple):
    email: str
    status: str = "sent"
    attempts: int = 1
    last_code: int | None = 250
    last_response: str | None = "2.0.0 OK"
    message_id: str | None = None
    lease_owner: str | None = None


def sent(email: str) -> Row:
    return Row(email, message_id=f"<{email}>")


def run(
    rows: list[Row], copies: dict[str, list[str]], *, allowed: int = 0, status: str = "sent"
) -> Figures:
    received = Counter({email: len(ids) for email, ids in copies.items()})
    ids: dict[str, set[str | None]] = {email: set(each) for email, each in copies.items()}
    return audit(
        Figures("f", "b", 1, len(rows), allowed=allowed), rows, received, ids, status=status
    )


def test_a_clean_run_has_no_problems() -> None:
    figures = run(
        [sent("a@x"), sent("b@x"), Row("c@x", "failed", 3, 421, "gave up after 3 attempts: 421")],
        {"a@x": ["<a@x>"], "b@x": ["<b@x>", "<b@x>"]},
        allowed=1,
    )
    assert figures.problems == []
    assert (figures.delivered, figures.failed, figures.lost, figures.duplicated) == (2, 1, 0, 1)


def test_a_reader_recorded_sent_but_never_received_is_lost() -> None:
    figures = run([sent("a@x"), sent("b@x")], {"a@x": ["<a@x>"]})
    assert figures.lost == 1
    assert any("never accepted" in p for p in figures.problems)


def test_duplicates_over_the_bound_or_with_other_message_ids_are_problems() -> None:
    over = run([sent("a@x")], {"a@x": ["<a@x>", "<a@x>", "<a@x>"]}, allowed=1)
    assert over.duplicated == 2 and any("more than the 1 allowed" in p for p in over.problems)
    mixed = run([sent("a@x")], {"a@x": ["<a@x>", "<other>"]}, allowed=5)
    assert any("different Message-IDs" in p for p in mixed.problems)


def test_stuck_leases_open_rows_strangers_and_silent_failures_are_problems() -> None:
    figures = run(
        [
            Row("a@x", "sending", lease_owner="w1"),
            Row("b@x", "deferred"),
            Row("c@x", "failed", last_response=""),
        ],
        {"stranger@x": ["<s>"]},
        status="sending",
    )
    text = "\n".join(figures.problems)
    for words in (
        "rows left open",
        "still hold a lease",
        "without a reason",
        "outside the edition",
    ):
        assert words in text
    assert "not 'sent'" in text
    assert figures.lost == 3
