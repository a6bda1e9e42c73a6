"""Subscribing and confirming as a reader does it: the form, the email, the button."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import Subscriber, Topic, TransactionalMessage
from mailer.rendering import Renderer
from mailer.sending import EditionSender
from mailer.service import Service
from mailer.stories import StoryInput, upsert_story
from tests.web.site import Site, settings_for


def count(site: Site, model: type[Subscriber] | type[TransactionalMessage]) -> int:
    with Session(site.engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_the_form_is_an_arabic_rtl_page_for_phones_with_the_newsroom_topics(site: Site) -> None:
    page = site.browser().get("/subscribe")
    assert page.status_code == 200
    assert '<html lang="ar" dir="rtl">' in page.text
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in page.text
    assert "Tahoma" in page.text
    for slug, name in [("breaking", "الأخبار العاجلة"), ("syria", "سوريا"), ("economy", "اقتصاد")]:
        assert f'value="{slug}"' in page.text and name in page.text
    for cadence in ("instant", "daily", "weekly"):
        assert f'name="cadence" value="{cadence}"' in page.text
    assert "ماذا يحدث بعد ذلك" in page.text  # says what happens next
    assert 'name="website"' in page.text  # the honeypot
    cookie = page.headers["set-cookie"]
    assert "mailer_csrf=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()


def test_subscribing_records_consent_and_mails_a_confirmation_on_the_priority_queue(
    site: Site,
) -> None:
    answer = site.subscribe(
        "Amal@Example.COM",
        topics=("syria", "economy"),
        cadence="daily",
        name="أمل",
        client=site.browser(),
    )
    assert answer.status_code == 200 and "تحقق من بريدك" in answer.text
    reader = site.reader("Amal@example.com")  # the domain is normalised, the local part kept
    assert reader is not None and reader.status == "pending" and reader.name == "أمل"
    assert reader.consent_source == "web" and reader.consent_ip == "testclient"
    assert reader.consent_user_agent == "testclient"
    assert reader.consent_at is not None
    assert datetime.now(UTC) - reader.consent_at < timedelta(minutes=1)
    assert site.subscriptions("Amal@example.com") == {("syria", "daily"), ("economy", "daily")}
    assert [queue for queue, _ in site.dispatcher.messages] == ["alerts"]

    (mail,) = site.inbox("amal@example.com")
    assert "اشتراكك" in str(mail["Subject"])
    assert mail["Precedence"] is None and mail["Auto-Submitted"] is None
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = mail.get_body(("html",))
    assert html is not None and 'dir="rtl"' in html.get_content()
    assert site.link("amal@example.com", "confirm").startswith("https://testserver/confirm/")


def test_a_form_without_its_csrf_pair_is_refused_and_records_nothing(site: Site) -> None:
    browser = site.browser()
    form = {"email": "x@example.com", "topics": "breaking", "cadence": "instant"}
    assert browser.post("/subscribe", data=form).status_code == 403
    # A field issued to another browser does not match this browser's cookie.
    other = site.csrf(site.browser().get("/subscribe"))
    browser.get("/subscribe")
    refused = browser.post("/subscribe", data=form | {"csrf_token": other})
    assert refused.status_code == 403 and "انتهت صلاحية الصفحة" in refused.text
    assert count(site, Subscriber) == 0 and site.dispatcher.messages == []


def test_a_filled_honeypot_looks_like_success_and_does_nothing(site: Site) -> None:
    bot = site.subscribe("bot@example.com", website="http://spam.example")
    human = site.subscribe("human@example.com")
    assert bot.status_code == human.status_code == 200 and bot.text == human.text
    assert site.reader("bot@example.com") is None
    assert [m["To"] for m in site.inbox("bot@example.com")] == []


def test_asking_again_before_confirming_replaces_the_choice(site: Site) -> None:
    site.subscribe("amal@example.com", topics=("syria", "economy"), cadence="daily")
    site.subscribe("amal@example.com", topics=("breaking",), cadence="instant")

    assert site.subscriptions("amal@example.com") == {("breaking", "instant")}
    assert len(site.inbox("amal@example.com")) == 2  # the confirmation, sent again
    assert count(site, Subscriber) == 1


def test_a_topic_added_while_the_site_runs_can_be_chosen_at_once(site: Site) -> None:
    """Topic ids are remembered between sign-ups; one the process has not seen is looked up."""
    assert site.subscribe("first@example.com").status_code == 200
    assert site.subscribe("second@example.com", topics=("sports",)).status_code == 400
    with Session(site.engine) as session:
        session.add(Topic(slug="sports", name="رياضة"))
        session.commit()
    assert site.subscribe("second@example.com", topics=("sports", "breaking")).status_code == 200
    assert site.subscriptions("second@example.com") == {
        ("sports", "instant"),
        ("breaking", "instant"),
    }


def test_bad_input_gets_the_form_back_with_an_arabic_error(site: Site) -> None:
    answer = site.subscribe("not an address", name="سارة")
    assert answer.status_code == 400
    assert "عنوان البريد الإلكتروني غير صالح" in answer.text
    assert 'value="not an address"' in answer.text and 'value="سارة"' in answer.text
    assert site.subscribe("a@example.com", topics=()).status_code == 400
    assert site.subscribe("a@example.com", topics=("sports",)).status_code == 400
    assert site.subscribe("a@example.com", cadence="hourly").status_code == 400
    assert count(site, Subscriber) == 0


def test_rate_limits_per_client_and_per_address(tmp_path: Path) -> None:
    site = Site(
        settings_for(
            tmp_path, subscribe_limit_per_ip="3/hour", subscribe_limit_per_address="2/hour"
        )
    )
    same = [site.subscribe("target@example.com") for _ in range(3)]
    # Over the address limit: the same page as ever, but no third confirmation is queued.
    assert {a.status_code for a in same} == {200} and len({a.text for a in same}) == 1
    assert len(site.inbox("target@example.com")) == 2
    limited = site.subscribe("fourth@example.com")  # the fourth request from this client
    assert limited.status_code == 429 and "طلبات كثيرة" in limited.text
    assert site.reader("fourth@example.com") is None


def test_confirming_takes_a_button_works_once_and_sends_a_welcome(site: Site) -> None:
    site.subscribe("amal@example.com")
    link = site.link("amal@example.com", "confirm")
    browser = site.browser()

    page = browser.get(link.removeprefix("https://testserver"))  # shows a button only
    assert page.status_code == 200 and "<form" in page.text and "تأكيد الاشتراك" in page.text
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "pending"

    missing_csrf = browser.post(link.removeprefix("https://testserver"))
    assert missing_csrf.status_code == 403
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "pending"

    done = site.press(link, client=browser)
    assert done.status_code == 200 and "تم تأكيد اشتراكك" in done.text
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "active" and reader.confirmed_at is not None
    welcome = site.inbox("amal@example.com")[-1]
    assert "أهلاً بك" in str(welcome["Subject"])
    assert site.link("amal@example.com", "preferences")

    path = link.removeprefix("https://testserver")
    reopened = browser.get(path)  # no button any more
    assert reopened.status_code == 200 and "مؤكَّد من قبل" in reopened.text
    assert "<form" not in reopened.text
    token = site.csrf(browser.get("/subscribe"))  # a valid CSRF pair for this browser
    second = browser.post(path, data={"csrf_token": token})  # the link used a second time
    assert second.status_code == 200 and "مؤكَّد من قبل" in second.text
    assert len(site.inbox("amal@example.com")) == 2  # confirmation + one welcome


def test_an_unconfirmed_reader_gets_no_alert(site: Site) -> None:
    site.add_readers("active@example.com")
    site.subscribe("pending@example.com")
    site.deliver()
    with Session(site.engine) as session:
        story, _ = upsert_story(
            session, StoryInput(title="خبر", url="https://news.example.com/1", topic="syria")
        )
        session.commit()
        story_id = story.id
    service = Service(site.engine, site.settings, site.dispatcher, Renderer(site.settings))
    assert service.trigger_alert(story_id).planned == 1
    sender = EditionSender(site.settings, site.engine, site.transport)
    for _, batch in site.dispatcher.sent:
        sender.send_batch(batch)
    assert len(site.inbox("pending@example.com")) == 1  # the confirmation, nothing else
    assert len(site.inbox("active@example.com")) == 1  # the alert


def test_resubscribing_after_unsubscribing_needs_a_fresh_confirmation(site: Site) -> None:
    site.subscribe("amal@example.com")
    first = site.link("amal@example.com", "confirm")
    site.press(first)
    unsubscribe = site.link("amal@example.com", "unsubscribe")
    site.browser().post(unsubscribe.removeprefix("https://testserver"), data={"scope": "all"})
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "unsubscribed"

    assert site.subscribe("AMAL@example.com", topics=("egypt",)).status_code == 200
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "pending"
    assert site.subscriptions("amal@example.com") == {("egypt", "instant")}
    stale = site.browser().get(first.removeprefix("https://testserver"))
    assert stale.status_code == 409  # the old link cannot re-activate the reader
    fresh = site.link("amal@example.com", "confirm")
    assert fresh != first
    assert site.press(fresh).status_code == 200
    reader = site.reader("amal@example.com")
    assert reader is not None and reader.status == "active"
