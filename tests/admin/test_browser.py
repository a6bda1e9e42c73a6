"""The admin UI in a real browser (Debian's Chromium driven by Playwright) against the real app.

The web app runs under uvicorn over an SQLite file; editions are sent by real Celery worker
processes over SMTP into the built-in sink, which the outbox page reads. Every page visited
must lay out right to left and log no console error (a CSP violation, a failed request or a
script error all show up there). Screenshots of the dashboard, an edition and the digest
preview, at desktop and phone sizes, are written to ``test-artifacts/admin/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.models import Edition, EditionKind, Suppression
from mailer.sink import list_messages
from mailer.users import create_user
from tests.admin.browser import (
    ARGS,
    CHROMIUM,
    DESKTOP,
    PHONE,
    Live,
    artifact,
    need_chromium,
    start_live,
)

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extras install it
    Browser = Page = None  # type: ignore[assignment,misc]
    sync_playwright = None  # type: ignore[assignment]

PASSWORD = "a long browser password"
READERS = 300
DIGEST_READERS = 40
_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def ar(number: int) -> str:
    """How the pages write a number (the default newsroom uses Arabic-Indic digits)."""
    return f"{number:,}".replace(",", "٬").translate(_DIGITS)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need_chromium()
    if sync_playwright is None:
        pytest.fail("the playwright package is missing (pip install playwright)")
    built = start_live(tmp_path_factory.mktemp("live-admin"))
    try:
        built.stack.add_readers(READERS)
        built.stack.add_readers(DIGEST_READERS, topics=("syria",), cadence="daily", start=10_001)
        with Session(built.stack.engine) as session:
            for role in ("admin", "operator", "editor"):
                create_user(session, role, PASSWORD, role)
            session.commit()
        yield built
    finally:
        built.stop()


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    """One browser tab that records console errors and checks every page it opens."""

    page: Page
    live: Live
    errors: list[str] = field(default_factory=list)
    navigations: int = 0

    def go(self, path: str) -> None:
        response = self.page.goto(self.live.url + path)
        assert response is not None and response.ok, (path, response and response.status)
        self.check_rtl()

    def check_rtl(self) -> None:
        direction = self.page.evaluate("getComputedStyle(document.body).direction")
        assert direction == "rtl", self.page.url

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.go("/admin/login")
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.live.url}/admin/")

    def submit(self, selector: str) -> None:
        """Press a form's button and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)
        self.check_rtl()

    def shoot(self, name: str) -> None:
        """The page at desktop and phone widths (the whole page, frames included)."""
        for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
            self.page.set_viewport_size(size)
            self.page.wait_for_load_state("load")
            # Chromium does not paint sandboxed frames it has never shown: show each once.
            for frame in self.page.locator("iframe").all():
                frame.scroll_into_view_if_needed()
                self.page.wait_for_timeout(100)
            self.page.evaluate("window.scrollTo(0, 0)")
            self.page.screenshot(path=str(artifact(f"{name}-{label}.png")), full_page=True)
        self.page.set_viewport_size(DESKTOP)

    def assert_clean(self, allowed: tuple[str, ...] = ()) -> None:
        unexpected = [e for e in self.errors if not any(re.search(a, e) for a in allowed)]
        assert not unexpected, unexpected


@pytest.fixture
def tab(browser: Browser, live: Live) -> Iterator[Tab]:
    context = browser.new_context(viewport=DESKTOP, locale="ar-EG")
    page = context.new_page()
    page.set_default_timeout(20_000)
    opened = Tab(page, live)

    def on_console(message: object) -> None:
        if getattr(message, "type", "") == "error":
            opened.errors.append(str(getattr(message, "text", message)))

    def on_navigation(frame: object) -> None:
        if frame is page.main_frame:
            opened.navigations += 1

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.errors.append(f"page error: {error}"))
    page.on("framenavigated", on_navigation)
    try:
        yield opened
    finally:
        context.close()


def alert_count(live: Live) -> int:
    with Session(live.stack.engine) as session:
        query = select(func.count()).where(Edition.kind == EditionKind.ALERT)
        return int(session.scalar(query) or 0)


def test_wrong_password_and_missing_csrf_token_are_refused(tab: Tab, live: Live) -> None:
    tab.go("/admin/login")
    tab.page.fill("#username", "operator")
    tab.page.fill("#password", "not the password")
    with tab.page.expect_response(lambda r: r.url.endswith("/admin/login")) as answer:
        tab.page.click("button[type=submit]")
    assert answer.value.status == 401
    tab.check_rtl()
    assert "اسم المستخدم أو كلمة المرور غير صحيحة" in tab.page.inner_text(".error")

    tab.sign_in("operator")
    tab.go("/admin/suppressions")
    tab.page.fill("#email", "forged@example.com")
    # What a page on another site would submit: the same fields, but no token.
    tab.page.evaluate(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())"
    )
    with tab.page.expect_response(lambda r: r.request.method == "POST") as refused:
        tab.submit("#add-suppression")
    assert refused.value.status == 403
    assert "انتهت صلاحية النموذج" in tab.page.inner_text("main")
    with Session(live.stack.engine) as session:
        assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    # The refusals are the only errors the browser reports.
    tab.assert_clean(allowed=(r"status of 40[13]",))


def test_alert_from_a_new_story_to_the_outbox(tab: Tab, live: Live) -> None:
    live.stop_workers()  # so the page is open before anything is sent
    tab.sign_in("admin")
    tab.go("/admin/stories")
    title = "انقطاع الكهرباء عن دمشق وريفها"
    tab.page.fill("#title", title)
    tab.page.fill("#url", "https://news.example.com/2026/power-cut")
    tab.page.select_option("#topic", "syria")
    tab.page.fill("#summary", "أعلنت وزارة الكهرباء انقطاع التيار عن العاصمة ومحيطها.")
    tab.page.check("input[name=breaking]")
    tab.submit("#save-story")
    assert "أُضيف الخبر" in tab.page.inner_text(".notice")

    tab.page.click("text=إرسال تنبيه عاجل…")
    tab.page.wait_for_url(re.compile(r"/alert$"))
    assert tab.page.inner_text("#reach") == ar(READERS)
    email = tab.page.frame_locator("iframe").locator("body")
    assert title in email.inner_text()
    tab.page.fill("#to", "desk@example.com")
    tab.submit("#send-test")
    assert "وصلت إلى الخادم" in tab.page.inner_text("#test-results")
    assert alert_count(live) == 0  # a test send creates no edition

    tab.submit("#confirm-alert")
    assert re.search(r"/admin/editions/\d+\?msg=alert_started$", tab.page.url)
    progress = tab.page.locator(".live")
    assert progress.get_attribute("data-percent") == "0"
    tab.page.evaluate("window.__stay = 'still here'")
    navigations = tab.navigations

    live.start_worker()
    tab.page.wait_for_selector('.live[data-percent="100"][data-status="sent"]', timeout=60_000)
    assert tab.page.evaluate("window.__stay") == "still here"  # no reload happened
    assert tab.navigations == navigations
    assert tab.page.inner_text("[data-field=status]") == "أُرسلت"
    assert tab.page.inner_text("[data-count=sent]") == ar(READERS)
    assert tab.page.inner_text("[data-field=percent]") == ar(100) + "٪"
    assert tab.page.is_hidden("#pause")
    tab.shoot("edition-alert")

    tab.go("/admin/outbox")
    tab.page.fill("#q", title)
    tab.submit("form[role=search] button")
    assert f"{ar(READERS + 1)} رسالة" in tab.page.inner_text("main")
    tab.page.locator(f"#outbox a:text-is('عاجل: {title}')").first.click()
    tab.page.wait_for_url(re.compile(r"/admin/outbox/[^/]+$"))
    tab.check_rtl()
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in tab.page.inner_text("#raw")
    assert "bounces+" in tab.page.inner_text("#envelope")  # the VERP envelope sender
    frame = tab.page.frame_locator("iframe")
    assert title in frame.locator("body").inner_text()
    assert len(list_messages(live.stack.settings.sink_dir)) == READERS + 1
    tab.assert_clean()


def test_schedule_runs_and_pausing_a_digest(tab: Tab, live: Live) -> None:
    live.stop_workers()
    live.stack.add_story("سوريا: افتتاح معبر حدودي جديد", topic="syria", breaking=False)
    tab.sign_in("operator")

    tab.go("/admin/schedules")
    tab.page.select_option("#topic", "syria")
    tab.page.fill("#at", "07:30")
    tab.page.select_option("#timezone", "Asia/Damascus")
    tab.submit("#save-schedule")
    assert "أُضيف الموعد" in tab.page.inner_text(".notice")
    runs = tab.page.locator("#schedules tr[data-schedule] .run-list li")
    assert runs.count() == 5
    for text in runs.all_inner_texts():
        assert text.endswith("٠٧:٣٠")  # 07:30 in Damascus, whatever the server's zone

    tab.go("/admin/editions")
    tab.page.select_option("#digest-topic", "syria")
    tab.submit("#send-digest")
    assert "بدأ إرسال النشرة" in tab.page.inner_text(".notice")
    edition_url = tab.page.url.split("?")[0]
    tab.submit("#pause")
    assert tab.page.inner_text("[data-field=status]") == "متوقفة مؤقتاً"
    assert tab.page.inner_text("[data-field=reason]") == "أوقفه المشغّل"
    assert tab.page.is_visible("#resume") and tab.page.is_hidden("#pause")
    tab.submit("#resume")
    assert tab.page.inner_text("[data-field=status]") == "جارٍ الإرسال"
    assert tab.page.is_visible("#pause")

    live.start_worker()
    tab.page.wait_for_selector('.live[data-percent="100"][data-status="sent"]', timeout=60_000)
    assert tab.page.inner_text("[data-count=sent]") == ar(DIGEST_READERS)
    tab.shoot("edition-digest")

    tab.go(edition_url.removeprefix(live.url) + "/preview")
    assert tab.page.locator("iframe").count() == 2
    frame = tab.page.frame_locator(".preview.phone iframe")
    assert "افتتاح معبر حدودي جديد" in frame.locator("body").inner_text()
    tab.shoot("digest-preview")

    tab.go("/admin/")
    assert tab.page.locator("#growth-chart rect.bar").count() == 30
    tab.shoot("dashboard")
    tab.assert_clean()


PAGES = [
    "/admin/",
    "/admin/stories",
    "/admin/editions",
    "/admin/schedules",
    "/admin/readers",
    "/admin/readers/1",
    "/admin/suppressions",
    "/admin/outbox",
    "/admin/smtp",
    "/admin/tokens",
]


def test_every_page_is_right_to_left_and_fits_a_phone(tab: Tab) -> None:
    tab.sign_in("admin")
    tab.page.set_viewport_size(PHONE)
    for path in PAGES:
        tab.go(path)
        # Wide tables scroll inside their own box; the page itself never scrolls sideways.
        overflow = tab.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (path, overflow)
        assert tab.page.locator("nav.nav a").count() == 9
    tab.assert_clean()
