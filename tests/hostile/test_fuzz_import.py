"""Fuzzing the CSV importer: no uncaught exception, every bad row reported on its line, < 1 s.

Files go through ``read_csv`` → ``import_readers`` into SQLite as ``mailer subscribers import``
takes them. (The bounce/DSN parser has its fuzzing with the same 1 s bound in
tests/mailer/test_bounces.py: random bytes and mutated corpus messages.)
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.subscribers import EXPORT_COLUMNS, ReaderRow, read_csv, write_csv
from tests.hostile.harness import (
    CSV_HEADER,
    CVE_2023_27043,
    FRAGMENTS,
    CsvVerdict,
    Newsroom,
    csv_bytes,
    hostile_address,
    hostile_text,
    size,
    try_csv,
)


def one_second(quick: int, full: int) -> settings:
    """Hypothesis fails an example that takes over a second (after re-running it to be sure)."""
    return settings(
        max_examples=size(quick, full),
        deadline=timedelta(seconds=1),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


_email = st.one_of(
    st.integers(0, 10**9).map(lambda n: f"reader{n}@example.com"),
    st.sampled_from(["Amal@Example.COM", "قارئ@مثال.مصر", " padded@example.com ", ""]),
    st.sampled_from(CVE_2023_27043),
    hostile_address,
)
_topics = st.one_of(
    st.sampled_from(
        ["", "breaking", "syria;economy", " breaking ; syria ", ";;", "nope", "BREAKING"]
    ),
    hostile_text,
)
_cadence = st.one_of(
    st.sampled_from(["", "instant", "daily", "weekly", " daily ", "  ", "hourly", "DAILY"]),
    hostile_text,
)
rows = st.lists(st.tuples(_email, hostile_text, _topics, _cadence), max_size=12)


def check(verdict: CsvVerdict) -> None:
    assert not verdict.problems, verdict
    assert verdict.seconds < 1.0, verdict


@one_second(120, 1500)
@given(rows=rows)
def test_each_row_is_imported_or_reported_on_its_own_line(
    newsroom: Newsroom, rows: list[tuple[str, str, str, str]]
) -> None:
    verdict = try_csv(newsroom, csv_bytes(CSV_HEADER, rows), rows)
    check(verdict)
    assert verdict.rows == len(rows) and not verdict.file_refused


# Mutations of a good file: quotes, delimiters and line breaks in the wrong places, a BOM, NULs,
# header damage, cut files, and bytes that are not UTF-8.
_GOOD = "email,name,topics,cadence\r\n" + "".join(
    f"reader{i}@example.com,قارئ {i},breaking;syria,daily\r\n" for i in range(8)
)
_edit = st.tuples(
    st.floats(0, 1),
    st.sampled_from(["insert", "delete", "replace"]),
    st.one_of(
        st.sampled_from(['"', ",", ";", "\r", "\n", "\r\n", '""', "\ufeff", "\x00", " ", "@"]),
        st.sampled_from(FRAGMENTS),
        st.text(max_size=6),
    ),
)


_junk = st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=3))


@one_second(150, 2000)
@given(edits=st.lists(_edit, min_size=1, max_size=10), junk=st.lists(_junk, max_size=2))
def test_a_damaged_file_never_raises_and_accounts_for_every_row(
    newsroom: Newsroom, edits: list[tuple[float, str, str]], junk: list[tuple[float, bytes]]
) -> None:
    text = _GOOD
    for where, how, piece in edits:
        at = int(where * len(text))
        if how == "insert":
            text = text[:at] + piece + text[at:]
        elif how == "delete":
            text = text[:at] + text[at + len(piece) * 3 :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    data = text.encode()
    for where, raw in junk:
        at = int(where * len(data))
        data = data[:at] + raw + data[at:]
    check(try_csv(newsroom, data))


@one_second(60, 600)
@given(
    rows=st.lists(st.tuples(_email, st.just("x" * 20_000), st.just(""), st.just("")), max_size=6)
)
def test_large_rows_stay_under_a_second(newsroom: Newsroom, rows: list[tuple[str, ...]]) -> None:
    check(try_csv(newsroom, csv_bytes(CSV_HEADER, rows), rows))


def test_a_file_without_an_email_column_is_refused_as_a_whole(newsroom: Newsroom) -> None:
    for data in (b"", b"name\nx\n", "\ufeffmail,name\na@example.com,x\n".encode()):
        verdict = try_csv(newsroom, data)
        assert verdict.file_refused and not verdict.problems, verdict


# -- regressions (bugs this fuzzing found) --------------------------------------------------


def test_a_row_that_is_not_utf8_is_reported_on_its_line(newsroom: Newsroom) -> None:
    # It used to stop the import with UnicodeDecodeError ("position 41", no line), losing the
    # rows after it and those of its unfinished chunk.
    data = b"email,name\nbad.utf8.a@example.com,a\nbad.utf8.b@example.com,\xff\xfe\n"
    data += b"bad.utf8.c@example.com,c\n"
    verdict = try_csv(newsroom, data)
    assert not verdict.problems and verdict.accepted == 2, verdict
    assert [line for line, _ in verdict.errors] == [3], verdict.errors


# It used to raise _csv.Error (not a ValueError: a traceback from the CLI), losing the rows of
# the unfinished chunk; then it was reported on the line before its own.
@pytest.mark.parametrize("before", [0, 1, 2])
def test_a_field_over_the_csv_limit_is_reported_on_its_line(
    newsroom: Newsroom, before: int
) -> None:
    data = b"email,name\n" + b"".join(
        b"huge%d.%d@example.com,a\n" % (before, i) for i in range(before)
    )
    data += b"huge.b@example.com," + b"x" * 140_000 + b"\nhuge.c@example.com,c\n"
    verdict = try_csv(newsroom, data)
    assert not verdict.problems and verdict.accepted >= before, verdict  # the rows before it
    assert verdict.errors and verdict.errors[0][0] == before + 2, verdict.errors


# Regression: after the csv module raised on a record (a quoted name over the field limit), the
# import read on without the record's bounds, so lines inside the quoted field became readers.
# Now it reports the record and stops reading the file there.
def test_nothing_inside_an_unreadable_record_is_imported(newsroom: Newsroom) -> None:
    data = b'email,name\nbefore@example.com,a\nhuge@example.com,"' + b"x" * 140_000
    data += b'\ninside@evil.example,Evil\ny"\n'
    verdict = try_csv(newsroom, data)
    assert newsroom.reader("before@example.com") is not None, verdict
    assert newsroom.reader("inside@evil.example") is None, verdict
    assert [line for line, _ in verdict.errors][:1] == [3], verdict.errors


@pytest.mark.parametrize("name", ["أمل\rx@evil.example", "أمل\nx@evil.example", "أمل\r\nx"])
def test_an_export_with_a_line_break_in_a_name_imports_back_as_one_row(
    newsroom: Newsroom, name: str
) -> None:
    # write_csv used lineterminator="\n", and the csv module then left a lone CR unquoted: the
    # record split in two, the name cut and the rest of the row in the next record's columns.
    row = dict.fromkeys(EXPORT_COLUMNS, "") | {
        "email": "roundtrip@example.com", "name": name, "topics": "breaking", "cadence": "instant"
    }  # fmt: skip
    exported = io.StringIO(newline="")
    write_csv([row], exported)
    path = newsroom.folder / "export.csv"
    path.write_bytes(exported.getvalue().encode())
    back = list(read_csv(path))
    assert len(back) == 1 and isinstance(back[0], ReaderRow), back
    assert back[0].email == "roundtrip@example.com" and back[0].topics == ("breaking",), back
    assert "".join(back[0].name.split()) == "".join(name.split()), back  # all but line breaks
