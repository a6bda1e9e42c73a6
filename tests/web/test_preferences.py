"""The preferences link of every email: choices, time zone, pause, leave, download, erase."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from httpx import Response
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mailer.models import Base, Delivery
from mailer.rendering import Renderer
from mailer.sending import EditionSender
from mailer.service import Service
from mailer.stories import StoryInput, upsert_story
from mailer.subscribers import ReaderRow, import_readers
from mailer.transport import SendResult
from tests.web.site import BASE, Site

ADDRESS = "amal@example.com"


def active_reader(site: Site) -> str:
    """A confirmed reader; the path of the preferences link their welcome email carries."""
    site.subscribe(ADDRESS, topics=("breaking", "syria"), name="أمل")
    site.press(site.link(ADDRESS, "confirm"))
    return site.link(ADDRESS, "preferences").removeprefix(BASE)


def save(site: Site, url: str, **form: object) -> Response:
    browser = site.browser()
    token = site.csrf(browser.get(url))
    return browser.post(url, data={"csrf_token": token} | form, follow_redirects=False)


def test_the_page_shows_the_readers_choices(site: Site) -> None:
    url = active_reader(site)
    page = site.browser().get(url)
    assert page.status_code == 200 and '<html lang="ar" dir="rtl">' in page.text
    assert ADDRESS in page.text and 'value="أمل"' in page.text
    assert 'value="syria:instant" checked' in page.text
    assert 'value="egypt:instant">' in page.text  # not chosen
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"  # the token stays in the URL


def test_changing_topics_cadence_and_time_zone(site: Site) -> None:
    url = active_reader(site)
    answer = save(
        site,
        url,
        action="save",
        name="أمل س.",
        sub=["syria:daily", "economy:weekly"],
        timezone="Asia/Beirut",
    )
    assert answer.status_code == 303
    assert site.subscriptions(ADDRESS) == {("syria", "daily"), ("economy", "weekly")}
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.timezone == "Asia/Beirut" and reader.name == "أمل س."
    assert "تم حفظ اختياراتك" in site.browser().get(f"{url}?done=saved").text

    refused = save(site, url, action="save", sub=["syria:hourly"], timezone="Asia/Beirut")
    assert refused.status_code == 400
    refused = save(site, url, action="save", sub=["syria:daily"], timezone="Mars/Olympus")
    assert refused.status_code == 400
    assert site.subscriptions(ADDRESS) == {("syria", "daily"), ("economy", "weekly")}


def test_forms_without_the_csrf_pair_or_with_an_unknown_action_change_nothing(
    site: Site,
) -> None:
    url = active_reader(site)
    assert save(site, url, action="explode").status_code == 400
    browser = site.browser()
    assert browser.post(url, data={"action": "leave"}).status_code == 403
    assert browser.post(f"{url}/delete", data={"confirm": "yes"}).status_code == 403
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.status == "active"


def test_pausing_for_n_days_and_resuming(site: Site) -> None:
    url = active_reader(site)
    assert save(site, url, action="pause", days="7").status_code == 303
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.paused_until is not None
    left = reader.paused_until - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    assert "موقوفة حتى" in site.browser().get(url).text
    assert save(site, url, action="pause", days="365").status_code == 400
    save(site, url, action="resume")
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.paused_until is None


def test_leaving_everything_and_choosing_again_needs_a_confirmation(site: Site) -> None:
    url = active_reader(site)
    left = save(site, url, action="leave")
    assert left.status_code == 200 and "كل الرسائل" in left.text
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.status == "unsubscribed"
    assert site.subscriptions(ADDRESS) == set()

    back = save(site, url, action="save", sub=["egypt:daily"], timezone="Africa/Cairo")
    assert back.status_code == 303
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.status == "pending"
    assert site.subscriptions(ADDRESS) == {("egypt", "daily")}
    assert site.press(site.link(ADDRESS, "confirm")).status_code == 200
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.status == "active"


def test_downloading_my_data(site: Site) -> None:
    url = active_reader(site)
    answer = site.browser().get(f"{url}/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    data = json.loads(answer.content)
    assert data["email"] == ADDRESS and data["name"] == "أمل" and data["status"] == "active"
    assert data["consent"]["source"] == "web" and data["consent"]["ip"] == "testclient"
    assert {(s["topic"], s["cadence"]) for s in data["subscriptions"]} == {
        ("breaking", "instant"),
        ("syria", "instant"),
    }
    assert [m["kind"] for m in data["emails"]] == ["confirmation", "welcome"]


def clear_copies(site: Site, needle: str) -> list[str]:
    """Every row, in every table, that holds ``needle`` in any column (case-insensitive)."""
    found = []
    with site.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                if needle.lower() in repr(tuple(row)).lower():
                    found.append(f"{table.name}: {row}")
    return found


def test_erasing_leaves_no_clear_copy_and_refuses_a_later_import(site: Site) -> None:
    url = active_reader(site)
    # An alert whose server reply quotes the address, as many do.
    site.transport.script = lambda rcpt: SendResult.from_reply(250, f"2.0.0 OK <{rcpt}> queued")
    with Session(site.engine) as session:
        story, _ = upsert_story(
            session, StoryInput(title="خبر", url="https://news.example.com/a", topic="syria")
        )
        session.commit()
        story_id = story.id
    Service(site.engine, site.settings, site.dispatcher, Renderer(site.settings)).trigger_alert(
        story_id
    )
    sender = EditionSender(site.settings, site.engine, site.transport)
    for _, batch in site.dispatcher.sent:
        sender.send_batch(batch)
    assert clear_copies(site, ADDRESS)  # the reader, and the delivery's server reply

    browser = site.browser()
    token = site.csrf(browser.get(url))
    not_ticked = browser.post(f"{url}/delete", data={"csrf_token": token})
    assert not_ticked.status_code == 400 and site.reader(ADDRESS) is not None

    erased = browser.post(f"{url}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert erased.status_code == 200 and "تم حذف بياناتك" in erased.text
    assert clear_copies(site, ADDRESS) == []
    assert clear_copies(site, "أمل") == []
    with Session(site.engine) as session:  # deliveries have no foreign key to do this for us
        kept = session.execute(select(Delivery.subscriber_id, Delivery.status)).all()
    assert kept == [(None, "sent")]  # the record of the send stays, without the reader
    assert site.browser().get(url).status_code == 410  # nothing left to show
    assert site.browser().get(f"{url}/export").status_code == 410

    report = import_readers(
        site.engine,
        [ReaderRow(line=2, email=ADDRESS.upper())],
        site.settings,
        consented=True,
    )
    assert report.errors == [(2, "address is suppressed")] and report.added == 0
    assert site.reader(ADDRESS) is None


def test_an_erased_reader_may_subscribe_again_by_confirming(site: Site) -> None:
    url = active_reader(site)
    browser = site.browser()
    token = site.csrf(browser.get(url))
    browser.post(f"{url}/delete", data={"csrf_token": token, "confirm": "yes"})
    site.transport.sent.clear()

    assert site.subscribe(ADDRESS).status_code == 200
    assert site.press(site.link(ADDRESS, "confirm")).status_code == 200
    reader = site.reader(ADDRESS)
    assert reader is not None and reader.status == "active"
    with site.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM suppressions")) == 0
