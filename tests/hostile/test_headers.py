"""Header injection end to end: hostile names, addresses and titles never add a header or a
recipient to what a reader receives, and the CVE-2023-27043 address shapes are refused.

Every input takes the real path: readers arrive through the CSV importer, stories through
``upsert_story``, alerts are rendered by ``Renderer`` and built by ``EditionSender.message_for``
(the whole send through ``send_batch`` in the end-to-end test), and the bytes are parsed back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings

from mailer.addresses import InvalidAddress, normalise
from tests.hostile.harness import (
    CVE_2023_27043,
    ENCODED_WORD_ADDRESSES,
    FRAGMENTS,
    Edition,
    Newsroom,
    Shape,
    benign_edition,
    hostile_address,
    hostile_text,
    line_breaks,
    message_problems,
    size,
    try_address,
    try_name,
    try_title,
)


def examples(quick: int, full: int) -> settings:
    return settings(
        max_examples=size(quick, full),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


_numbers = count(1)


# -- CVE-2023-27043 --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", CVE_2023_27043)
def test_cve_2023_27043_addresses_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        normalise(raw)
    assert len(str(refused.value)) > 10


def test_cve_2023_27043_addresses_in_a_csv_are_each_reported_on_their_line(
    newsroom: Newsroom,
) -> None:
    before = newsroom.readers()
    path = newsroom.write_csv({"email": raw, "name": "مهاجم"} for raw in CVE_2023_27043)
    report = newsroom.import_csv(path)
    assert report.read == len(CVE_2023_27043) and report.added == 0
    assert [line for line, _ in report.errors] == list(range(2, len(CVE_2023_27043) + 2))
    assert all(reason.startswith("invalid address: ") for _, reason in report.errors)
    assert newsroom.readers() == before


# -- names, addresses, titles: Hypothesis ----------------------------------------------------


@pytest.fixture(scope="module")
def edition(newsroom: Newsroom) -> Edition:
    return benign_edition(newsroom)


@examples(120, 1500)
@given(name=hostile_text)
def test_any_reader_name_shows_only_in_the_greeting(
    newsroom: Newsroom, edition: Edition, name: str
) -> None:
    address = f"named{next(_numbers)}@example.com"
    verdict = try_name(newsroom, edition, name, address)
    assert verdict.accepted and not verdict.problems, verdict


@examples(150, 2000)
@given(raw=hostile_address)
def test_any_address_is_refused_on_its_line_or_is_the_one_recipient(
    newsroom: Newsroom, edition: Edition, raw: str
) -> None:
    verdict = try_address(newsroom, edition, raw)
    assert not verdict.problems, verdict


AlertRoom = tuple[Newsroom, Shape]


@pytest.fixture(scope="module")
def alert_room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertRoom]:
    """A newsroom with three alert readers, and how their alert looks with a benign title."""
    room = Newsroom(tmp_path_factory.mktemp("alerts"))
    room.add_reader("amal@example.com", "أمل")
    room.add_reader("قارئ@مثال.مصر", "قارئ")  # SMTPUTF8: the To header carries raw UTF-8
    edition = benign_edition(room)
    room.deliver()
    yield room, edition.baseline
    room.close()


hostile_title = hostile_text


@examples(40, 400)
@given(title=hostile_title)
def test_any_title_is_refused_or_becomes_exactly_the_subject(
    alert_room: AlertRoom, title: str
) -> None:
    verdict = try_title(*alert_room, title)
    assert not verdict.problems, verdict


# -- one whole alert to hostile readers ------------------------------------------------------


@pytest.mark.parametrize("eightbit", [True, False], ids=["8bit", "quoted-printable"])
def test_an_alert_to_hostile_readers_gives_each_exactly_their_own_message(
    make_room: Callable[..., Newsroom], eightbit: bool
) -> None:
    room = make_room(eightbit=eightbit)
    good = [("benign@example.com", "أمل")] + [
        (f"reader{i}@example.com", f"قارئ {fragment} {i}") for i, fragment in enumerate(FRAGMENTS)
    ]
    good += [("قارئ@مثال.مصر", "\u202eأمل\r\nBcc: evil@example.org")]
    bad = [(raw, "مهاجم") for raw in CVE_2023_27043[:6]]
    bad += [("amal@example.com\r\nBcc: evil@example.org", ""), ("a@b.example, evil@x.example", "")]
    rows = good[:20] + bad + good[20:]
    report = room.import_csv(room.write_csv({"email": e, "name": n} for e, n in rows))

    # Every refused row is reported on a line of its own record (a record spans the lines of
    # the breaks quoted inside it).
    spans, line = {}, 1
    for email, name in rows:
        start, line = line + 1, line + 1 + line_breaks(email, name)
        spans[email] = range(start, line + 1)
    assert report.added == len(good) and len(report.errors) == len(bad)
    for (email, _), (reported, reason) in zip(bad, report.errors, strict=True):
        assert reported in spans[email] and reason.startswith("invalid address"), reported

    title = "عاجل \u202e%0d%0aBcc: evil@example.org =0D=0A \"quoted\", 'single'; <b>x</b> \\r\\n"
    subject = room.subject(room.alert(room.publish(title, "ملخص")))
    assert title in subject
    sent = room.deliver()

    recipients = {normalise(email).email: room.reader(normalise(email).email) for email, _ in good}
    assert sorted(s.envelope_to for s in sent) == sorted(recipients)
    baseline = Shape.of(next(s.data for s in sent if s.envelope_to == "benign@example.com"))
    for message in sent:
        reader = recipients[message.envelope_to]
        assert reader is not None
        problems = message_problems(
            message.data,
            baseline=baseline,
            recipient=message.envelope_to,
            subject=subject,
            name=reader.name or "",
        )
        assert not problems, (message.envelope_to, problems)


# -- regressions (bugs these tests found) ----------------------------------------------------


# Python 3.11.7's email package decodes RFC 2047 words in a str header value (CVE-2024-6923): a
# title like '=?utf-8?q?=0D=0ABcc:_x@evil.example?=' wrote a real Bcc header (with two encoded
# CRLFs, a new body) into every copy of the alert, DKIM-signed; feed titles reach this path.
@pytest.mark.parametrize(
    "title",
    [
        "=?utf-8?q?=0D=0ABcc:_evil@example.org?=",
        "عاجل =?utf-8?b?DQpSZXBseS1UbzogZXZpbEBleGFtcGxlLm9yZw==?=",
        "=?utf-8?q?=0D=0A=0D=0A<h1>phishing</h1>?=",
    ],
    ids=["bcc", "reply-to", "body"],
)
def test_a_title_with_an_encoded_line_break_is_refused_or_stays_in_the_subject(
    alert_room: AlertRoom, title: str
) -> None:
    verdict = try_title(*alert_room, title)
    assert not verdict.problems, verdict


@pytest.mark.parametrize("control", ["\t", "\x07", "\x1b", "\x7f", "\x9b"])
def test_a_title_with_a_control_character_is_refused_or_delivered(
    alert_room: AlertRoom, control: str
) -> None:
    # Regression: a title holding one used to be stored, and then every send of its alert
    # failed with HeaderInjectionError.
    verdict = try_title(*alert_room, f"عنوان{control}الخبر")
    assert not verdict.problems, verdict


@pytest.mark.parametrize("raw", ENCODED_WORD_ADDRESSES)
def test_an_address_that_is_an_encoded_word_is_refused(
    newsroom: Newsroom, edition: Edition, raw: str
) -> None:
    # Regression: Python's parser read these in To as another address (x@example.com), a quoted
    # list, or a header break (PortSwigger's "Splitting the email atom").
    verdict = try_address(newsroom, edition, raw)
    assert not verdict.accepted and not verdict.problems, verdict
