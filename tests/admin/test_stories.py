"""Stories and breaking alerts in the admin: add, search, import a feed, test-send, confirm."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import Edition, Story
from tests.admin.world import AdminWorld

FEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


def edition_count(world: AdminWorld) -> int:
    with Session(world.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Edition)) or 0)


def test_an_editor_adds_a_story_and_finds_it(world: AdminWorld) -> None:
    answer = world.post(
        "editor",
        "/admin/stories",
        {
            "title": "سقوط أمطار غزيرة على القاهرة",
            "url": "https://news.example.com/egypt/rain",
            "topic": "egypt",
            "summary": "توقعات بأمطار حتى المساء.",
            "body_html": "<p onclick='x()'>نص <script>alert(1)</script>الخبر</p>",
            "published_at": "2026-03-09T08:30",
        },
    )
    assert answer.status_code == 303
    story_page = world.client("editor").get(answer.headers["location"])
    assert "أُضيف الخبر" in story_page.text
    assert "سقوط أمطار غزيرة على القاهرة" in story_page.text
    with Session(world.engine) as session:
        story = session.scalars(select(Story)).one()
        assert "<script" not in story.body_html and "onclick" not in story.body_html
        # Typed in the newsroom's zone (Cairo, UTC+2 in March).
        assert story.published_at.isoformat() == "2026-03-09T06:30:00+00:00"
    assert world.audit()[-1][1:] == ("story.create", f"story:{story.id}")

    found = world.client("editor").get("/admin/stories", params={"q": "أمطار"})
    assert "سقوط أمطار غزيرة" in found.text
    missing = world.client("editor").get("/admin/stories", params={"q": "زلزال"})
    assert "سقوط أمطار غزيرة" not in missing.text
    assert "لا توجد أخبار تطابق البحث" in missing.text


def test_a_story_without_a_proper_link_is_sent_back_with_what_was_typed(
    world: AdminWorld,
) -> None:
    answer = world.post(
        "editor", "/admin/stories", {"title": "عنوان محفوظ", "url": "news.example.com/x"}
    )
    assert answer.status_code == 422
    assert "اكتب عنوان الخبر ورابطه الكامل" in answer.text
    assert 'value="عنوان محفوظ"' in answer.text
    assert edition_count(world) == 0


def test_a_feed_file_is_imported(world: AdminWorld) -> None:
    content = (FEEDS / "newsroom.rss").read_bytes()
    answer = world.post(
        "editor",
        "/admin/stories/import",
        {"topic": "syria"},
        files={"file": ("newsroom.rss", content, "application/rss+xml")},
    )
    assert answer.status_code == 200
    assert "استُورد الموجز" in answer.text
    assert "وقف إطلاق النار يدخل حيز التنفيذ في حلب" in answer.text
    with Session(world.engine) as session:
        assert session.scalar(select(func.count()).select_from(Story)) >= 3
    assert world.audit()[-1][1] == "feed.import"

    bad = world.post("editor", "/admin/stories/import", {"topic": "syria", "url": ""})
    assert bad.status_code == 422
    assert "تعذّر استيراد الموجز" in bad.text


def test_the_alert_waits_for_confirmation_and_a_test_send_goes_first(world: AdminWorld) -> None:
    world.add_readers(7)
    story_id = world.add_story("عاجل: زلزال بقوة ٥ درجات")
    page = world.client("editor").get(f"/admin/stories/{story_id}/alert")
    assert page.status_code == 200
    assert '<strong id="reach">٧</strong>' in page.text  # seven alert readers
    assert edition_count(world) == 0  # looking at the confirmation sends nothing

    tested = world.post(
        "editor",
        f"/admin/stories/{story_id}/alert/test",
        {"to": "desk@example.com, chief@example.com"},
    )
    assert tested.status_code == 200
    assert tested.text.count("وصلت إلى الخادم") == 2
    assert sorted(r for _, r, _ in world.transport.sent) == [
        "chief@example.com",
        "desk@example.com",
    ]
    assert b"=?utf-8?" in world.transport.sent[0][2]  # an encoded Arabic subject…
    assert edition_count(world) == 0  # …and still no edition

    refused = world.post(
        "editor", f"/admin/stories/{story_id}/alert/test", {"to": "not an address"}
    )
    assert refused.status_code == 422

    sent = world.post("editor", f"/admin/stories/{story_id}/alert")
    assert sent.status_code == 303
    location = sent.headers["location"]
    assert location.endswith("?msg=alert_started")
    assert world.dispatcher.sent  # batches are queued for workers
    world.drain()
    progress = world.client("editor").get(location.split("?")[0] + "/progress.json").json()
    assert (progress["percent"], progress["counts"]) == (100, {"sent": 7})

    again = world.post("editor", f"/admin/stories/{story_id}/alert")
    assert again.headers["location"] == location.replace("alert_started", "alert_exists")
    assert edition_count(world) == 1
    # The confirmation page of a story already alerted leads to its alert instead.
    revisit = world.client("editor").get(f"/admin/stories/{story_id}/alert")
    assert revisit.status_code == 303 and revisit.headers["location"] == again.headers["location"]


def test_the_alert_preview_shows_the_email_without_scripts(world: AdminWorld) -> None:
    story_id = world.add_story("عاجل: اختبار المعاينة")
    preview = world.client("editor").get(f"/admin/stories/{story_id}/alert/preview.html")
    assert preview.status_code == 200
    assert "عاجل: اختبار المعاينة" in preview.text
    assert "__MLR_" not in preview.text  # per-reader markers replaced by sample values
    assert preview.headers["content-security-policy"].startswith("sandbox;")
