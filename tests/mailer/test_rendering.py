"""Rendering: what a reader sees in the alert and digest emails, before per-reader substitution."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import lxml.html
import pytest

from mailer import placeholders
from mailer.config import Settings
from mailer.placeholders import marker
from mailer.rendering import (
    RenderedEmail,
    Renderer,
    StoryView,
    arabic_date,
    hijri_date,
    with_utm,
)

SAMPLES = Path(__file__).resolve().parents[2] / "mailer" / "samples"
TOPICS = {t["slug"]: t["name"] for t in json.loads((SAMPLES / "topics.json").read_text("utf-8"))}
ISSUED = datetime(2026, 11, 25, 5, 0, tzinfo=UTC)
# Explicit, so MAILER_* variables in the environment cannot change what these tests see.
DATES = {"date_locale": "ar_EG", "arabic_digits": True, "hijri_date": False}


def _sample_stories() -> list[StoryView]:
    items = json.loads((SAMPLES / "stories.json").read_text("utf-8"))
    return [
        StoryView(
            title=item["title"],
            summary=item["summary"],
            url=item["url"],
            published_at=datetime.fromisoformat(item["published_at"]),
            is_breaking=item["is_breaking"],
            topic_name=TOPICS[item["topic"]],
        )
        for item in items
    ]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        site_name="أخبار المثال",
        site_url="https://news.example.com",
        postal_address="١٢ شارع التحرير، القاهرة، مصر",
        utm_source="nl",
        utm_medium="mail",
        **DATES,
    )


@pytest.fixture(scope="module")
def renderer(settings: Settings) -> Renderer:
    return Renderer(settings)


@pytest.fixture(scope="module")
def stories() -> list[StoryView]:
    return _sample_stories()


@pytest.fixture(scope="module")
def assad(stories: list[StoryView]) -> StoryView:
    return next(s for s in stories if s.title.startswith("روسيا تخطط لهروب بشار الأسد"))


@pytest.fixture(scope="module")
def alert(renderer: Renderer, assad: StoryView) -> RenderedEmail:
    return renderer.render_alert(assad, topic_name="سوريا")


@pytest.fixture(scope="module")
def digest(renderer: Renderer, stories: list[StoryView]) -> RenderedEmail:
    return renderer.render_digest(stories, topic_name="سوريا", cadence="daily", issued_at=ISSUED)


def _doc(email: RenderedEmail) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(email.html)


def _flat(text: str) -> str:
    """The text part with its line wrapping undone."""
    return " ".join(text.split())


def _story_links(email: RenderedEmail) -> list[str]:
    return [h for h in _doc(email).xpath("//a/@href") if "/20" in h]


# --- right-to-left layout -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["alert", "digest"])
def test_document_is_arabic_rtl(kind: str, request: pytest.FixtureRequest) -> None:
    email: RenderedEmail = request.getfixturevalue(kind)
    root = _doc(email)
    assert root.get("lang") == "ar"
    assert root.get("dir") == "rtl"
    assert root.body.get("dir") == "rtl"


@pytest.mark.parametrize("kind", ["alert", "digest"])
def test_wrapper_tables_and_cells_carry_rtl_after_inlining(
    kind: str, request: pytest.FixtureRequest
) -> None:
    email: RenderedEmail = request.getfixturevalue(kind)
    root = _doc(email)
    for cls in ("wrapper", "container"):
        (table,) = root.find_class(cls)
        assert table.tag == "table"
        assert table.get("dir") == "rtl"
        style = table.get("style").replace(" ", "")
        assert "direction:rtl" in style
        assert "text-align:right" in style
    (wrapper,) = root.find_class("wrapper")
    assert wrapper.get("align") == "right"
    # The 600px column is centred on wide screens; premailer must not flip it to the right.
    (container,) = root.find_class("container")
    assert container.get("align") == "center"
    assert "max-width:600px" in container.get("style").replace(" ", "")
    for cls in ("masthead", "content", "footer"):
        (cell,) = root.find_class(cls)
        assert cell.get("dir") == "rtl"
        assert cell.get("align") == "right"
        assert "direction:rtl" in cell.get("style").replace(" ", "")
        assert "Tahoma" in cell.get("style")


def test_phone_media_query_and_font_stack_survive_inlining(alert: RenderedEmail) -> None:
    assert "@media only screen and (max-width: 620px)" in alert.html
    assert "width: 100% !important" in alert.html
    assert "letter-spacing" not in alert.html
    # Rules already inlined are not repeated in the <style> block: it holds the @media rule
    # only, and no line starts with "." (each would cost SMTP dot-stuffing on every send).
    style = alert.html[alert.html.index("<style") : alert.html.index("</style>")]
    assert ".masthead-link" not in style and ".preheader" not in style
    assert not any(line.startswith(".") for line in alert.html.splitlines())


def test_masthead_shows_site_name(alert: RenderedEmail, settings: Settings) -> None:
    (masthead,) = _doc(alert).find_class("masthead")
    assert masthead.text_content().strip() == settings.site_name


# --- per-reader placeholders ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["alert", "digest"])
def test_body_placeholders_in_both_parts(kind: str, request: pytest.FixtureRequest) -> None:
    email: RenderedEmail = request.getfixturevalue(kind)
    for name in placeholders.BODY_NAMES:
        assert email.html.count(marker(name)) == 1, name
        assert email.text.count(marker(name)) == 1, name
    # Intact inside href after premailer/lxml (which percent-encode "{{…}}").
    assert f'href="{marker(placeholders.UNSUBSCRIBE_URL)}"' in email.html
    assert f'href="{marker(placeholders.PREFERENCES_URL)}"' in email.html
    assert email.subject.count("__MLR_") == 0


def test_placeholders_sit_where_the_reader_expects_them(alert: RenderedEmail) -> None:
    root = _doc(alert)
    (footer,) = root.find_class("footer")
    footer_text = footer.text_content()
    assert f"وصلتك هذه الرسالة على {marker(placeholders.EMAIL)} لأنك مشترك في" in footer_text
    # The address is isolated left-to-right so it does not scramble the Arabic sentence.
    (bdi,) = footer.iter("bdi")
    assert bdi.get("dir") == "ltr"
    assert bdi.text == marker(placeholders.EMAIL)
    links = {a.text_content().strip(): a.get("href") for a in footer.iter("a")}
    assert links["إلغاء الاشتراك"] == marker(placeholders.UNSUBSCRIBE_URL)
    assert links["إدارة اشتراكاتك"] == marker(placeholders.PREFERENCES_URL)
    (greeting,) = root.find_class("greeting")
    assert greeting.text == marker(placeholders.GREETING)
    # Text part: the greeting opens the content, the unsubscribe URL sits on its own line.
    lines = alert.text.splitlines()
    assert marker(placeholders.UNSUBSCRIBE_URL) in lines
    assert marker(placeholders.PREFERENCES_URL) in lines
    assert lines.index(marker(placeholders.GREETING)) < 5


@pytest.mark.parametrize("kind", ["alert", "digest"])
def test_footer_names_publisher_and_postal_address(
    kind: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    email: RenderedEmail = request.getfixturevalue(kind)
    (footer,) = _doc(email).find_class("footer")
    for part in (footer.text_content(), email.text):
        assert settings.postal_address in part
        assert settings.site_name in part
        assert "سوريا" in part  # what the reader subscribed to


# --- alert ----------------------------------------------------------------------------------


def test_alert_subject_badge_and_button(alert: RenderedEmail, assad: StoryView) -> None:
    assert alert.subject == f"عاجل: {assad.title}"
    root = _doc(alert)
    (badge,) = root.find_class("badge")
    assert badge.text == "عاجل"
    assert "background-color:#b71c1c" in badge.get("style").replace(" ", "")
    (headline,) = root.find_class("headline")
    assert headline.text_content() == assad.title
    (button,) = root.find_class("button")
    assert button.text == "اقرأ المزيد"
    assert button.get("href").startswith(assad.url + "?")
    (preheader,) = root.find_class("preheader")
    assert preheader.text_content().startswith(assad.summary)
    assert "display:none" in preheader.get("style").replace(" ", "")


def test_real_article_renders_in_both_parts(alert: RenderedEmail, assad: StoryView) -> None:
    assert assad.is_breaking
    assert assad.title in _flat(alert.text)
    assert assad.summary in _flat(alert.text)
    # 18:20 UTC is 20:20 in Cairo, the same day.
    assert "الاثنين، ٢٣ نوفمبر ٢٠٢٦ — ٨:٢٠ م" in alert.text
    assert "الاثنين، ٢٣ نوفمبر ٢٠٢٦" in alert.html
    assert alert.text.count(assad.url) == 1


def test_text_part_lines_are_short(alert: RenderedEmail, digest: RenderedEmail) -> None:
    for email in (alert, digest):
        long_lines = [ln for ln in email.text.splitlines() if len(ln) > 76]
        # Only URLs may exceed 76 characters: breaking them would break the link.
        assert all(ln.startswith("https://") for ln in long_lines), long_lines


def test_editor_text_is_escaped(renderer: Renderer) -> None:
    story = StoryView(
        title='<script>alert("x")</script> عنوان',
        summary="<b>ملخص</b> & تفاصيل",
        url="https://news.example.com/x",
        published_at=ISSUED,
    )
    email = renderer.render_alert(story, topic_name="مصر")
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert "<b>ملخص</b>" not in email.html
    (headline,) = _doc(email).find_class("headline")
    assert headline.text_content() == story.title
    # Plain text and the subject are not HTML: they keep the characters as written.
    assert story.title in _flat(email.text)
    assert email.subject == f"عاجل: {story.title}"


@pytest.mark.parametrize("bad", ["سطر أول\nسطر ثان", "عنوان\r\nBcc: x@example.com", "أ\rب"])
def test_subject_with_line_break_raises(renderer: Renderer, bad: str) -> None:
    story = StoryView(
        title=bad, summary="ملخص", url="https://news.example.com/x", published_at=ISSUED
    )
    with pytest.raises(ValueError, match="one line"):
        renderer.render_alert(story, topic_name="مصر")


def test_marker_typed_into_story_text_is_refused(renderer: Renderer) -> None:
    story = StoryView(
        title=f"عنوان {marker(placeholders.EMAIL)}",
        summary="م",
        url="https://news.example.com/x",
        published_at=ISSUED,
    )
    with pytest.raises(ValueError, match="placeholder"):
        renderer.render_alert(story, topic_name="مصر")
    with pytest.raises(ValueError, match="placeholder"):
        renderer.render_digest([story], topic_name="مصر", cadence="daily", issued_at=ISSUED)


def test_javascript_story_url_is_refused(renderer: Renderer) -> None:
    story = StoryView(title="ع", summary="م", url="javascript:alert(1)", published_at=ISSUED)
    with pytest.raises(ValueError, match="http"):
        renderer.render_alert(story, topic_name="مصر")


# --- digest ---------------------------------------------------------------------------------


def test_digest_lists_all_stories_in_given_order(
    renderer: Renderer, stories: list[StoryView]
) -> None:
    shuffled = stories[::-1][:3] + stories[:2]
    email = renderer.render_digest(shuffled, topic_name="سوريا", cadence="daily", issued_at=ISSUED)
    titles = [h.text_content() for h in _doc(email).find_class("story-title")]
    assert titles == [s.title for s in shuffled]
    positions = [_flat(email.text).index(s.title) for s in shuffled]
    assert positions == sorted(positions)
    assert "\n٥. " in email.text  # numbered in Arabic-Indic digits


def test_digest_marks_breaking_stories_and_links_read_more(
    digest: RenderedEmail, stories: list[StoryView]
) -> None:
    blocks = _doc(digest).find_class("story")
    assert len(blocks) == len(stories)
    for block, story in zip(blocks, stories, strict=True):
        badges = block.find_class("badge")
        assert len(badges) == (1 if story.is_breaking else 0), story.title
        (more,) = block.find_class("more-link")
        assert "اقرأ المزيد" in more.text_content()
        assert more.get("href").startswith(story.url + "?")
        assert story.summary in block.text_content()


def test_digest_subject_date_heading_and_preheader(
    digest: RenderedEmail, stories: list[StoryView]
) -> None:
    assert digest.subject == "النشرة اليومية: سوريا — الأربعاء، ٢٥ نوفمبر ٢٠٢٦"
    root = _doc(digest)
    (meta,) = [m for m in root.find_class("meta") if "نوفمبر" in m.text_content()]
    assert "الأربعاء، ٢٥ نوفمبر ٢٠٢٦" in meta.text_content()
    (preheader,) = root.find_class("preheader")
    assert preheader.text_content().startswith(f"{stories[0].title} • {stories[1].title}")


def test_weekly_digest_subject(renderer: Renderer, stories: list[StoryView]) -> None:
    email = renderer.render_digest(stories, topic_name="اقتصاد", cadence="weekly", issued_at=ISSUED)
    assert email.subject.startswith("النشرة الأسبوعية: اقتصاد — ")


def test_digest_rejects_unknown_cadence_and_no_stories(
    renderer: Renderer, stories: list[StoryView]
) -> None:
    with pytest.raises(ValueError, match="cadence"):
        renderer.render_digest(stories, topic_name="مصر", cadence="hourly", issued_at=ISSUED)
    with pytest.raises(ValueError, match="at least one"):
        renderer.render_digest([], topic_name="مصر", cadence="daily", issued_at=ISSUED)


def test_digest_shows_hijri_line_when_enabled(stories: list[StoryView]) -> None:
    email = Renderer(Settings(**{**DATES, "hijri_date": True})).render_digest(
        stories, topic_name="سوريا", cadence="daily", issued_at=ISSUED
    )
    assert "١٥ جمادى الآخرة ١٤٤٨ هـ" in email.html
    assert "١٥ جمادى الآخرة ١٤٤٨ هـ" in email.text


# --- UTM ------------------------------------------------------------------------------------


def test_story_links_carry_utm(alert: RenderedEmail, digest: RenderedEmail) -> None:
    for email, campaign in ((alert, "alert-2026-11-23"), (digest, "digest-daily-2026-11-25")):
        links = _story_links(email)
        assert links
        for href in links:
            query = parse_qs(urlsplit(href).query)
            assert query == {
                "utm_source": ["nl"],
                "utm_medium": ["mail"],
                "utm_campaign": [campaign],
            }


def test_with_utm_keeps_existing_query_and_utm_keys(settings: Settings) -> None:
    url = with_utm("https://news.example.com/a?id=7&utm_campaign=editor#top", settings, "c")
    parts = urlsplit(url)
    assert parts.fragment == "top"
    assert parts.query == "id=7&utm_campaign=editor&utm_source=nl&utm_medium=mail"
    assert with_utm("https://news.example.com", settings, "c") == (
        "https://news.example.com/?utm_source=nl&utm_medium=mail&utm_campaign=c"
    )


def test_existing_query_survives_rendering(renderer: Renderer) -> None:
    story = StoryView(
        title="ع", summary="م", url="https://news.example.com/s?id=9&p=2", published_at=ISSUED
    )
    email = renderer.render_alert(story, topic_name="مصر")
    (button,) = _doc(email).find_class("button")
    query = parse_qs(urlsplit(button.get("href")).query)
    assert query["id"] == ["9"]
    assert query["p"] == ["2"]
    assert query["utm_source"] == ["nl"]
    assert "id=9&amp;p=2&amp;utm_source=nl" in email.html


# --- dates ----------------------------------------------------------------------------------


def test_arabic_date_uses_arabic_indic_digits() -> None:
    text = arabic_date(datetime(2026, 11, 25, 9, 0, tzinfo=UTC), Settings(**DATES))
    assert text == "الأربعاء، ٢٥ نوفمبر ٢٠٢٦"
    assert not any(ch.isascii() and ch.isdigit() for ch in text)


def test_arabic_date_latin_digits_when_configured() -> None:
    text = arabic_date(
        datetime(2026, 11, 25, 9, 0, tzinfo=UTC), Settings(**{**DATES, "arabic_digits": False})
    )
    assert "25" in text
    assert "2026" in text
    assert "نوفمبر" in text
    assert "٢٥" not in text


def test_arabic_date_is_the_cairo_day() -> None:
    # 23:30 UTC on the 24th is already the 25th in Cairo (UTC+2).
    text = arabic_date(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), Settings(**DATES))
    assert "٢٥ نوفمبر" in text


def test_hijri_date_off_by_default() -> None:
    assert hijri_date(ISSUED, Settings(**DATES)) == ""
    assert hijri_date(
        ISSUED, Settings(date_locale="ar_EG", hijri_date=True, arabic_digits=False)
    ) == ("15 جمادى الآخرة 1448 هـ")


def test_renders_with_templates_dir_override(tmp_path: Path, settings: Settings) -> None:
    default = Path(__file__).resolve().parents[2] / "templates"
    (tmp_path / "email" / "ping").mkdir(parents=True)
    (tmp_path / "email" / "style.css").write_text(
        (default / "email" / "style.css").read_text("utf-8"), "utf-8"
    )
    (tmp_path / "email" / "ping" / "subject.txt").write_text("تجربة {{ word }}\n", "utf-8")
    (tmp_path / "email" / "ping" / "body.txt").write_text("{{ word }}\n", "utf-8")
    (tmp_path / "email" / "ping" / "body.html").write_text(
        '<html lang="ar" dir="rtl"><body><p class="x">{{ word }}</p></body></html>', "utf-8"
    )
    email = Renderer(settings, templates_dir=tmp_path).render("ping", {"word": "<ok>"})
    assert email.subject == "تجربة <ok>"
    assert email.text == "<ok>\n"
    assert "&lt;ok&gt;" in email.html


@pytest.mark.parametrize(
    ("title", "subject"),
    [
        ("سقوط النظام في دمشق", "عاجل: سقوط النظام في دمشق"),
        ("عاجل: سقوط النظام في دمشق", "عاجل: سقوط النظام في دمشق"),  # not "عاجل: عاجل: …"
    ],
)
def test_alert_subject_says_breaking_once(
    renderer: Renderer, assad: StoryView, title: str, subject: str
) -> None:
    from dataclasses import replace

    rendered = renderer.render_alert(replace(assad, title=title), topic_name="سوريا")
    assert rendered.subject == subject
