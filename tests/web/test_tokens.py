"""Signed links: tampered, expired or foreign ones change nothing; rotated keys keep working."""

from __future__ import annotations

import time

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from mailer.tokens import CONFIRM, PREFERENCES, Tokens
from tests.web.site import BASE, Site


def path(url: str) -> str:
    return url.removeprefix(BASE)


def tamper(url: str) -> str:
    """Change one character of the signature (not the last: its low bits may be padding)."""
    return url[:-5] + ("A" if url[-5] != "A" else "B") + url[-4:]


def pending_with_link(site: Site, address: str = "amal@example.com") -> str:
    site.subscribe(address)
    return site.link(address, "confirm")


def status(site: Site, address: str = "amal@example.com") -> str | None:
    reader = site.reader(address)
    return None if reader is None else reader.status


def test_tampered_and_foreign_confirm_links_are_refused_and_change_nothing(site: Site) -> None:
    link = pending_with_link(site)
    browser = site.browser()
    token = site.csrf(browser.get("/subscribe"))
    site.add_readers("badr@example.com")
    site.subscribe("badr@example.com")  # an active reader: the email holds other links
    unsubscribe = site.link("badr@example.com", "unsubscribe")
    preferences = site.link("badr@example.com", "preferences")
    confirm_token = link.rsplit("/", 1)[1]
    bad = [
        tamper(path(link)),
        "/confirm/not-a-token",
        "/confirm/" + unsubscribe.rsplit("/", 1)[1],  # another purpose
        "/confirm/" + preferences.rsplit("/", 1)[1],
    ]
    for url in bad:
        for answer in (browser.get(url), browser.post(url, data={"csrf_token": token})):
            assert answer.status_code == 400, url
            assert "رابط غير صالح" in answer.text
    for url in ("/unsubscribe/" + confirm_token, "/preferences/" + confirm_token):
        assert browser.get(url).status_code == 400
        assert browser.post(url, data={"csrf_token": token}).status_code == 400
    assert status(site) == "pending" and status(site, "badr@example.com") == "active"
    assert site.subscriptions("badr@example.com") == {("breaking", "instant")}


def test_an_expired_confirm_link_is_refused_and_changes_nothing(site: Site) -> None:
    link = pending_with_link(site)
    payload = Tokens(site.settings).verify_timed(CONFIRM, link.rsplit("/", 1)[1], 86400)

    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 86400

    old = URLSafeTimedSerializer(["k1"], salt=CONFIRM, signer=EightDaysAgo).dumps(payload)
    browser = site.browser()
    assert browser.get(f"/confirm/{old}").status_code == 410
    expired = browser.post(
        f"/confirm/{old}", data={"csrf_token": site.csrf(browser.get("/subscribe"))}
    )
    assert expired.status_code == 410 and "انتهت صلاحية الرابط" in expired.text
    assert status(site) == "pending"
    assert site.press(link).status_code == 200  # the current link still works
    assert status(site) == "active"


def test_a_reused_confirm_link_changes_nothing(site: Site) -> None:
    link = pending_with_link(site)
    assert site.press(link).status_code == 200
    sent = len(site.inbox("amal@example.com"))  # confirmation and welcome
    browser = site.browser()
    token = site.csrf(browser.get("/subscribe"))
    for _ in range(2):
        again = browser.post(path(link), data={"csrf_token": token})
        assert again.status_code == 200 and "مؤكَّد من قبل" in again.text
    assert len(site.inbox("amal@example.com")) == sent  # no second welcome
    assert status(site) == "active"


def test_a_repeated_one_click_answers_200_and_changes_nothing(site: Site) -> None:
    site.add_readers("amal@example.com", topics=("breaking", "syria"))
    site.subscribe("amal@example.com")  # "already subscribed" email: its links end everything
    url = path(site.link("amal@example.com", "unsubscribe"))
    body, headers = (
        b"List-Unsubscribe=One-Click",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    first = site.browser().post(url, content=body, headers=headers)
    assert first.status_code == 200 and status(site) == "unsubscribed"
    second = site.browser().post(url, content=body, headers=headers)
    assert second.status_code == 200 and status(site) == "unsubscribed"
    assert site.subscriptions("amal@example.com") == set()


def test_links_signed_with_the_previous_key_work_after_a_rotation(site: Site) -> None:
    link = pending_with_link(site)
    rotated = site.settings.model_copy(update={"secret_keys": "k2,k1"})
    browser = site.browser(site.make_app(rotated))
    assert site.press(link, client=browser).status_code == 200
    assert status(site) == "active"
    preferences = site.link("amal@example.com", "preferences")  # signed with k1
    assert browser.get(path(preferences)).status_code == 200
    # …and what the rotated app signs now is refused by a deployment that only knows k1.
    newer = Tokens(rotated).sign(PREFERENCES, 1)
    assert site.browser().get(f"/preferences/{newer}").status_code == 400
    assert browser.get(f"/preferences/{newer}").status_code == 200


def test_links_of_an_unknown_key_are_refused(site: Site) -> None:
    link = pending_with_link(site)
    stranger = site.settings.model_copy(update={"secret_keys": "someone-else"})
    browser = site.browser(site.make_app(stranger))
    assert browser.get(path(link)).status_code == 400
    assert status(site) == "pending"
