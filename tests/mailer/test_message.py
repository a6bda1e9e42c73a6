"""The edition message: built once, personalised per reader, and what a mail client sees of it."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from email.utils import formataddr
from functools import cache
from html import escape
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer import placeholders as ph
from mailer.message import (
    HeaderInjectionError,
    MessageSpec,
    MessageTemplate,
    validate_header_value,
)

M = ph.marker
SUBJECT = "عاجل: روسيا تخطط لهروب بشار الأسد بعد انهيار نظامه في دمشق بشكل مدبر"
SENTENCE = (
    "في مشهد يفضح واقع النظام السوري المتهاوي، وفي لحظة تراجع لم تخطر على بال أحد، كانت "
    "المعارضة المسلحة تقف على أبواب دمشق بينما كانت روسيا تتسارع لحسم الموقف. "
)
PARAGRAPH = SENTENCE * 5  # ~700 letters, ~1.3 KB of UTF-8 on one line: must be wrapped for 8bit
STYLE = "font-family:Tahoma,Arial,sans-serif;font-size:16px;line-height:1.7;color:#222222;"
CSS = (
    "@media only screen and (max-width:600px) { .wrap { width: 100% !important; } "
    '.x { font-family: "Segoe UI", "Helvetica Neue", Tahoma, Arial; } '
    '.alt::after { content: "تعذر عرض الصورة في برنامج البريد الذي تستخدمه الآن"; } } '
)
PRE = "رقم   1\tسطر  بمسافات  محفوظة"
CONTROLS = "[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]"  # what a body value shows as spaces
BAD = ["\r", "\n", "\x00", "\u2028", "x\r\nBcc: victim@example.org"]


def long_html() -> str:
    """Premailer-like output: one 25 KB line of inlined, right-to-left Arabic HTML."""
    head = (
        '<!DOCTYPE html><html lang="ar" dir="rtl"><head><meta charset="utf-8"><style>'
        + CSS * 20
        + "</style></head>"
        '<body style="margin:0;padding:0;direction:rtl;text-align:right">'
        '<!--[if mso]><table role="presentation" width="600"><tr><td><![endif]-->'
        f'<p dir="rtl" align="right" style="{STYLE}">مرحباً {M(ph.GREETING)}،</p>'
    )
    head += "".join(
        f'<img src="https://news.example.com/{i}.png" alt="{SENTENCE * 2}" width="200"/>'
        for i in range(4)
    )
    stories: list[str] = []
    i = 0
    while len((head + "".join(stories)).encode()) < 25_000:
        link = f"https://news.example.com/story/{i}?utm_source=newsletter&amp;utm_medium=email"
        stories.append(
            f'<table role="presentation" width="600" align="right" dir="rtl" style="{STYLE}">'
            f'<tr><td align="right" style="{STYLE}text-align:right;direction:rtl">'
            f'<h2 style="{STYLE}"><a href="{link}" style="color:#a00">خبر رقم {i}</a></h2>'
            f'<p style="{STYLE}">{PARAGRAPH}</p><a href="{link}">اقرأ المزيد</a></td></tr></table>'
        )
        i += 1
    foot = (
        f"<pre>{PRE}</pre>"
        f'<p style="{STYLE}">وصلتك هذه الرسالة على {M(ph.EMAIL)}. '
        f'<a href="{M(ph.UNSUBSCRIBE_URL)}" style="color:#a00">إلغاء الاشتراك</a> · '
        f'<a href="{M(ph.PREFERENCES_URL)}">التفضيلات</a></p>'
        "<!--[if mso]></td></tr></table><![endif]--></body></html>"
    )
    return head + "".join(stories) + foot


def long_text() -> str:
    return (
        f"مرحباً {M(ph.GREETING)}،\n\n{PARAGRAPH}\n\n{PARAGRAPH}\n\n"
        f"وصلتك هذه الرسالة على {M(ph.EMAIL)}\n"
        f"إلغاء الاشتراك: {M(ph.UNSUBSCRIBE_URL)}\nالتفضيلات: {M(ph.PREFERENCES_URL)}\n"
    )


def spec(**changes: object) -> MessageSpec:
    fields: dict[str, object] = {
        "subject": SUBJECT,
        "html": f'<p>مرحباً {M(ph.GREETING)}</p><a href="{M(ph.UNSUBSCRIBE_URL)}">إلغاء</a>',
        "text": f"مرحباً {M(ph.GREETING)}\nإلغاء الاشتراك: {M(ph.UNSUBSCRIBE_URL)}\n",
        "sender": "النشرة الإخبارية <news@example.com>",
        "reply_to": "التحرير <desk@example.com>",
        "list_id": "breaking.news.example.com",
        "kind": "alert",
        "feedback_id": "edition-7:alert:news",
    }
    fields.update(changes)
    return MessageSpec(**fields)  # type: ignore[arg-type]


def reader(tag: str = "a", **changes: str) -> dict[str, str]:
    values = {
        ph.TO: f"reader-{tag}@example.org",
        ph.MESSAGE_ID: f"<7.{tag}@news.example.com>",
        ph.DATE: "Wed, 25 Nov 2026 09:30:00 +0200",
        ph.UNSUBSCRIBE_URL: f"https://news.example.com/unsubscribe/TOKEN{tag}?list=breaking&x=1",
        ph.UNSUBSCRIBE_MAILTO: f"mailto:unsubscribe+{tag}@news.example.com",
        ph.GREETING: f"أحمد {tag}",
        ph.EMAIL: f"reader-{tag}@example.org",
        ph.PREFERENCES_URL: f"https://news.example.com/preferences/TOKEN{tag}",
    }
    values.update(changes)
    return values


def longest_values() -> dict[str, str]:
    """Every value at its limit, with characters that grow when escaped or encoded."""
    url = "https://news.example.com/unsubscribe/?" + "a=1&" * 20
    return reader(
        greeting=("محمد عبد الرحمن " * 30)[:298] + '&"',
        email="قارئ" * 8 + "@" + ("d" * 62 + ".") * 4 + "x" * 35,  # 64 octets @ 287
        unsubscribe_url=url + "T" * (500 - len(url)),
        preferences_url=url + "P" * (500 - len(url)),
        unsubscribe_mailto="mailto:u@news.example.com?subject=" + "x" * 466,
    )


@cache
def template(eightbit: bool, big: bool = False) -> MessageTemplate:
    extra = {"html": long_html(), "text": long_text()} if big else {}
    return MessageTemplate.build(spec(**extra), eightbit=eightbit)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = msg.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    return (
        text.get_content().replace("\r\n", "\n"),
        html.get_content().replace("\r\n", "\n"),
    )


def expected(body: str, values: dict[str, str], html: bool) -> str:
    return ph.PATTERN.sub(lambda m: escape(values[m[1]]) if html else values[m[1]], body)


def squash(text: str) -> str:
    """What a browser sees: whitespace runs collapse, whitespace before '>' means nothing."""
    return re.sub(r"\s+", " ", re.sub(r"\s+>", ">", text)).strip()


@pytest.mark.parametrize("eightbit", [True, False])
def test_reader_message_parses_back_with_their_values(eightbit: bool) -> None:
    values = reader(greeting='<b>&"سلمى', to="سلمى@example.org")
    data = template(eightbit).personalise(values)
    msg = parse(data)

    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == SUBJECT
    assert str(msg["From"]) == "النشرة الإخبارية <news@example.com>"
    # RFC 6532: the address goes out as UTF-8 (the email parser reads it as surrogates).
    assert "\r\nTo: سلمى@example.org\r\n".encode() in data
    assert msg["Message-ID"] == values[ph.MESSAGE_ID]
    assert msg["Date"].datetime.isoformat() == "2026-11-25T09:30:00+02:00"
    assert msg["List-Id"] == "<breaking.news.example.com>"
    assert msg["List-Unsubscribe"] == (
        f"<{values[ph.UNSUBSCRIBE_URL]}>, <{values[ph.UNSUBSCRIBE_MAILTO]}>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Feedback-ID"] == "edition-7:alert:news"
    text, html = bodies(msg)
    assert 'مرحباً <b>&"سلمى' in text and values[ph.UNSUBSCRIBE_URL] in text
    assert "مرحباً &lt;b&gt;&amp;&quot;سلمى" in html
    assert f'href="{escape(values[ph.UNSUBSCRIBE_URL])}"' in html
    assert ph.PREFIX not in text + html + str(msg)


def test_headers_come_in_the_documented_order() -> None:
    msg = parse(template(True).personalise(reader()))
    assert msg.keys() == [
        "From", "Reply-To", "To", "Subject", "Date", "Message-ID", "List-Id",
        "List-Unsubscribe", "List-Unsubscribe-Post", "Auto-Submitted", "Feedback-ID",
        "MIME-Version", "Content-Type",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "present", "absent"),
    [
        ("alert", ("Auto-Submitted", "auto-generated"), "Precedence"),
        ("digest", ("Precedence", "bulk"), "Auto-Submitted"),
        ("confirmation", None, "Precedence"),
        ("welcome", None, "Auto-Submitted"),
    ],
)
def test_kind_sets_auto_submitted_or_precedence(
    kind: str, present: tuple[str, str] | None, absent: str
) -> None:
    built = MessageTemplate.build(spec(kind=kind, reply_to=None, feedback_id=None))
    msg = parse(built.personalise(reader()))
    if present:
        assert msg[present[0]] == present[1]
    assert absent not in msg and "Reply-To" not in msg and "Feedback-ID" not in msg


def test_list_id_may_carry_an_arabic_name_and_extra_headers_are_kept() -> None:
    built = MessageTemplate.build(
        spec(list_id="عاجل <breaking.news.example.com>", extra_headers={"X-Edition": "7"})
    )
    msg = parse(built.personalise(reader()))
    assert msg["List-Id"] == "عاجل <breaking.news.example.com>"
    assert msg["X-Edition"] == "7"


@pytest.mark.parametrize("eightbit", [True, False])
def test_long_arabic_message_has_only_short_crlf_lines(eightbit: bool) -> None:
    built = template(eightbit, big=True)
    values = longest_values()
    data = built.personalise(values)

    assert built.size > 25_000
    assert b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b"")
    lines = data.split(b"\r\n")
    assert max(map(len, lines)) < 998
    msg = parse(data)
    parts = list(msg.iter_parts())
    encodings = [p["Content-Transfer-Encoding"] for p in parts]
    assert encodings == (["8bit"] * 2 if eightbit else ["quoted-printable"] * 2)
    if not eightbit:
        body = data[data.index(b"\r\n\r\n") :]
        assert max(map(len, body.split(b"\r\n"))) <= 76
        assert body.isascii()


@pytest.mark.parametrize("eightbit", [True, False])
def test_long_message_decodes_to_the_intended_text_and_html(eightbit: bool) -> None:
    values = longest_values()
    text, html = bodies(parse(template(eightbit, big=True).personalise(values)))
    want_text, want_html = expected(long_text(), values, False), expected(long_html(), values, True)
    if eightbit:  # long lines were wrapped: a newline stands where a space was
        assert text.replace("\n", " ") == want_text.replace("\n", " ")
        assert squash(html) == squash(want_html)
    else:  # quoted-printable carries it exactly
        assert text == want_text
        assert html == want_html + "\n"


class _Shown(HTMLParser):
    """What wrapping must never change: tags, attribute values, text in <pre>, and words."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.pre: list[str] = []
        self.words: list[str] = []
        self._in_pre = False
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_pre = self._in_pre or tag == "pre"

    def handle_endtag(self, tag: str) -> None:
        self._in_pre = self._in_pre and tag != "pre"

    def handle_data(self, data: str) -> None:
        (self.pre if self._in_pre else self.words).append(data)


def test_wrapping_keeps_tags_attributes_and_preformatted_text() -> None:
    values = reader()
    _, html = bodies(parse(template(True, big=True).personalise(values)))
    got, want = _Shown(html), _Shown(expected(long_html(), values, True))
    assert got.tags == want.tags
    assert got.pre == want.pre == [PRE]
    style = html[html.index("<style>") : html.index("</style>")]
    assert re.findall(r'"[^"]*"', style) == re.findall(r'"[^"]*"', CSS) * 20  # CSS strings intact
    assert " ".join("".join(got.words).split()) == " ".join("".join(want.words).split())


@pytest.mark.parametrize("static", [74, 75, 76, 77, 151, 152])
def test_quoted_printable_lines_stay_within_76_next_to_a_value(static: int) -> None:
    text = f"{'a' * static}{M(ph.GREETING)}{'b' * static}\n"
    built = MessageTemplate.build(spec(text=text), eightbit=False)
    data = built.personalise(reader(greeting="c" * static))
    body = data[data.index(b"\r\n\r\n") :]
    assert max(map(len, body.split(b"\r\n"))) <= 76
    assert bodies(parse(data))[0] == f"{'a' * static}{'c' * static}{'b' * static}\n"


def test_markup_without_spaces_wraps_inside_tags_not_between_them() -> None:
    cells = "".join(f"<td>{i}</td>" for i in range(300))
    html = f"<table><tr>{cells}</tr></table><p>{M(ph.GREETING)}</p>"
    data = MessageTemplate.build(spec(html=html), eightbit=True).personalise(reader())
    assert max(map(len, data.split(b"\r\n"))) < 998
    msg = parse(data)
    assert [p["Content-Transfer-Encoding"] for p in msg.iter_parts()] == ["8bit", "8bit"]
    got = bodies(msg)[1]
    assert got.count("\n") > 2 and "\n<" not in got  # no whitespace text between tags
    assert squash(got) == squash(expected(html, reader(), True))


def test_part_that_cannot_be_wrapped_falls_back_to_quoted_printable() -> None:
    html = f"<p>{M(ph.GREETING)}</p><pre>{'سطر طويل بلا فواصل ' * 80}</pre>"
    values = reader()
    msg = parse(MessageTemplate.build(spec(html=html), eightbit=True).personalise(values))
    text_part, html_part = msg.iter_parts()
    assert text_part["Content-Transfer-Encoding"] == "8bit"
    assert html_part["Content-Transfer-Encoding"] == "quoted-printable"
    assert bodies(msg)[1] == expected(html, values, True) + "\n"


@pytest.mark.parametrize("eightbit", [True, False])
def test_two_readers_differ_only_in_their_values(eightbit: bool) -> None:
    built = template(eightbit, big=True)
    a, b = reader("A1b2c3"), reader("Z9y8x7")
    data_a, data_b = built.personalise(a), built.personalise(b)
    assert data_a == built.personalise(dict(a))  # deterministic
    assert data_a != data_b
    assert data_a.replace(b"A1b2c3", b"Z9y8x7") == data_b


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(
    "field", ["subject", "sender", "reply_to", "list_id", "feedback_id", "extra_headers"]
)
def test_control_characters_in_edition_headers_are_refused(field: str, bad: str) -> None:
    value: object = {"sender": "news@example.com", "list_id": "a.example.com"}.get(field, "x")
    value = {"X-Note": f"x{bad}"} if field == "extra_headers" else f"{value}{bad}"
    with pytest.raises(HeaderInjectionError):
        MessageTemplate.build(spec(**{field: value}))


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("name", ph.HEADER_NAMES)
def test_control_characters_in_a_readers_header_values_are_refused(name: str, bad: str) -> None:
    with pytest.raises(HeaderInjectionError):
        template(True).personalise(reader(**{name: reader()[name] + bad}))


@pytest.mark.parametrize("value", ["x\ty", "x\x7f", "x\x85y", "x\u2029", "\x1b[31m"])
def test_validate_header_value_refuses_every_control_character(value: str) -> None:
    with pytest.raises(HeaderInjectionError):
        validate_header_value(value)
    assert validate_header_value("عاجل: خبر") == "عاجل: خبر"


def test_newline_in_a_readers_name_stays_inside_the_body() -> None:
    values = reader(greeting="سلمى\r\nBcc: victim@example.org\r\n\r\n<script>")
    msg = parse(template(True).personalise(values))
    text, html = bodies(msg)
    assert "Bcc" not in msg and msg["To"].addresses[0].addr_spec == values[ph.TO]
    assert "مرحباً سلمى  Bcc: victim@example.org    <script>\n" in text
    assert "&lt;script&gt;" in html and "<script>" not in html


@pytest.mark.parametrize(
    ("name", "size"),
    [(ph.GREETING, 301), (ph.EMAIL, 321), (ph.UNSUBSCRIBE_URL, 501), (ph.TO, 901)],
)
def test_values_over_their_limit_are_refused(name: str, size: int) -> None:
    html = f"<p>{M(ph.GREETING)} {M(ph.EMAIL)}</p>"
    built = MessageTemplate.build(spec(html=html))

    def value(length: int) -> str:  # To must still look like an address
        return "x" * (length - 12) + "@example.org" if name == ph.TO else "x" * length

    built.personalise(reader(**{name: value(size - 1)}))
    with pytest.raises(ValueError, match=name):
        built.personalise(reader(**{name: value(size)}))


@pytest.mark.parametrize(
    "changes",
    [
        {"html": f"<p>{M('nmae')}</p>"},  # a typo would reach readers as a marker
        {"text": M(ph.TO)},  # header values have no place in the body
        {"subject": f"عاجل {M(ph.GREETING)}"},
        {"sender": "not an address"},
        {"list_id": "no-dot"},
        {"extra_headers": {"Bcc": "all@example.com"}},
        {"extra_headers": {"Bad Name": "x"}},
    ],
)
def test_bad_edition_specs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MessageTemplate.build(spec(**changes))


_HEADER_SET = parse(template(True).personalise(reader())).keys()


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=300), eightbit=st.booleans())
def test_any_name_in_the_greeting_adds_no_header_nor_recipient(name: str, eightbit: bool) -> None:
    msg = parse(template(eightbit).personalise(reader(greeting=name)))
    assert msg.keys() == _HEADER_SET
    assert [a.addr_spec for a in msg["To"].addresses] == ["reader-a@example.org"]
    text, html = bodies(msg)
    shown = re.sub(CONTROLS, " ", name)
    assert f"مرحباً {shown}\n" in text
    assert f"<p>مرحباً {escape(shown)}</p>" in html


@settings(max_examples=150, deadline=None)
@given(
    before=st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=300),
    value=st.text(max_size=120),
    eightbit=st.booleans(),
)
def test_any_text_around_any_value_decodes_exactly(before: str, value: str, eightbit: bool) -> None:
    text = f"{before}{M(ph.GREETING)}{before}\n"
    data = MessageTemplate.build(spec(text=text), eightbit=eightbit).personalise(
        reader(greeting=value)
    )
    body = data[data.index(b"\r\n\r\n") :]
    assert max(map(len, body.split(b"\r\n"))) <= (997 if eightbit else 76)
    got = bodies(parse(data))[0]
    want = f"{before}{re.sub(CONTROLS, ' ', value)}{before}\n"
    if eightbit:  # a line too long for 8bit is wrapped: one newline where one space was
        got, want = got.replace("\n", " "), want.replace("\n", " ")
    assert got == want


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(ph.HEADER_NAMES),
    value=st.text(st.characters(codec="utf-8"), max_size=80),
)
def test_any_header_value_is_refused_or_gives_one_to(name: str, value: str) -> None:
    try:
        data = template(True).personalise(reader(**{name: value}))
    except HeaderInjectionError:
        assert re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", value)
        return
    except ValueError as error:  # too long for its header line, or empty
        message = str(error)
        assert "longer than" in message or "empty" in message or "not a valid" in message
        return
    msg = parse(data)
    assert msg.keys() == _HEADER_SET
    assert len(msg.get_all("To", [])) == 1


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=40))
def test_any_display_name_formatted_for_to_keeps_the_one_recipient(name: str) -> None:
    name = re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", name)  # as the sender does
    try:
        to = formataddr((name, "reader@example.org"))
        data = template(True).personalise(reader(to=to))
    except HeaderInjectionError:
        return
    msg = parse(data)
    assert msg.keys() == _HEADER_SET
    assert [a.addr_spec for a in msg["To"].addresses] == ["reader@example.org"]


ARTICLE = (
    "في مشهد يفضح واقع النظام السوري المتهاوي العسكرية للمعارضة التي كانت تقترب من دمشق "
    "وفي لحظة تراجع أفقية لم تخطر على بال أحد كانت المعارضة المسلحة تقف على أبواب دمشق"
)
ARTICLE_WORDS = ARTICLE.split()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(ARTICLE_WORDS) - 1), st.integers(1, 25))
def test_arabic_subjects_keep_every_space_when_folded(start: int, count: int) -> None:
    """Folding between encoded words at a space made readers see two words fused."""
    from email.header import decode_header, make_header

    subject = " ".join(ARTICLE_WORDS[start : start + count])
    data = MessageTemplate.build(spec(subject=subject)).personalise(reader())
    assert parse(data)["Subject"] == subject
    raw = data.split(b"\r\nSubject: ", 1)[1]
    lines = [raw.split(b"\r\n")[0]]
    for line in raw.split(b"\r\n")[1:]:
        if not line.startswith((b" ", b"\t")):
            break
        lines.append(line)
    strict = str(make_header(decode_header(b"".join(lines).decode("ascii"))))
    assert strict == subject  # RFC 2047's own rule, as strict mail readers apply it
