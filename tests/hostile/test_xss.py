"""The OWASP XSS filter-evasion payloads (xss_payloads.txt) as story HTML, titles, summaries,
reader names, form fields and topic names: nothing executable reaches an email or a page.

"Executable" is judged by two HTML parsers (lxml and the standard library's tokenizer) and
compared with the same email or page made from benign input: script elements, frames,
objects, ``<base>``, ``<meta http-equiv=refresh>``, ``on*`` attributes, javascript:/vbscript:/
active data: URLs (after the unescaping and whitespace removal browsers do), script in CSS.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.hostile.apifuzz import target
from tests.hostile.harness import Newsroom, body, executable, parse, risky, xss_payloads
from tests.hostile.xss import Surface, api_surface, email_surface, pages_surface

PAYLOADS = xss_payloads()
#: Payloads that hold nothing a browser would run, even pasted raw into a page body: a script
#: context break without a script, a NUL inside a tag name (parsed as U+FFFD), an unclosed or
#: empty attribute, an old-IE backtick quote.
INERT_WHEN_RAW = {
    "\\\";alert('XSS');//",
    "<scr\x00ipt>alert(1)</scr\x00ipt>",
    "<IMG SRC=\"`<javascript:alert>`('XSS')\"",
    "<IMG SRC= onmouseover=\"alert('xxs')\">",
    "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
    "<BR SIZE=\"&{alert('XSS')}\">",
}


def test_the_payload_list_is_the_cheat_sheet_and_the_checker_sees_each_one_raw() -> None:
    assert len(PAYLOADS) >= 60
    assert any("{" not in p and "\t" in p for p in PAYLOADS)  # the escapes were decoded
    assert any("\x00" in p for p in PAYLOADS) and any("\n" in p for p in PAYLOADS)
    page = "<html><head><title>t</title></head><body><p>{}</p></body></html>"
    benign = risky(page.format("نص"))
    unseen = [p for p in PAYLOADS if not risky(page.format(p)) - benign]
    assert set(unseen) == INERT_WHEN_RAW, unseen


def check(surface: Surface, *places: str) -> None:
    assert surface.tried == len(PAYLOADS)
    assert not surface.findings, "\n".join(surface.findings[:10])
    assert surface.server_errors == 0, surface
    assert surface.accepted >= len(PAYLOADS) - 5, surface.refusals  # the payloads got in…
    for place in places:  # …and show, as text, where a reader sees them
        assert surface.shown[place] >= 0.9 * len(PAYLOADS), (place, surface.shown)


def test_nothing_executable_reaches_an_alert_a_digest_or_a_stored_story(
    make_room: Callable[..., Newsroom],
) -> None:
    room = make_room(digest_story_limit=len(PAYLOADS) + 5)
    check(email_surface(room, PAYLOADS), "alert email")


def test_nothing_executable_reaches_a_reader_page_or_a_confirmation_email(
    make_room: Callable[..., Newsroom],
) -> None:
    surface = pages_surface(make_room(), PAYLOADS)
    check(
        surface,
        "subscribe form error",
        "confirmation email",
        "preferences page",
        "unsubscribe page",
    )


def test_the_api_answers_json_and_its_previews_hold_nothing_executable(
    make_room: Callable[..., Newsroom],
) -> None:
    check(api_surface(target(make_room()), PAYLOADS), "API preview")


@pytest.mark.parametrize("image", ["javascript:alert(1)", "data:text/html,<script>1</script>"])
def test_a_story_image_that_is_not_a_web_url_never_reaches_an_email(
    make_room: Callable[..., Newsroom], image: str
) -> None:
    # Regression: the link was checked (with_utm) but the image went into <img src> as it was.
    room = make_room()
    room.add_reader("image@example.com", "أمل")
    reader = room.reader("image@example.com")
    assert reader is not None
    try:
        story = room.publish("عنوان", "ملخص", image_url=image)
    except ValueError:
        return  # refused: fine
    html = body(parse(room.message_for(room.prepared(room.alert(story)), reader)), "html")
    assert not executable(html), dict(executable(html))
