"""What the reader routes share: Jinja2 pages from ``templates/web/``, Arabic labels, security
headers, the CSRF pair of every form, and waking workers after a commit.

Every page extends one right-to-left base (``<html lang="ar" dir="rtl">``, a viewport for
phones, Tahoma/Arial). Templates autoescape; nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine
from starlette.datastructures import FormData

from mailer.config import Settings
from mailer.csrf import COOKIE, FIELD, Csrf
from mailer.dispatch import Dispatcher, load_dispatcher
from mailer.models import Cadence
from mailer.rendering import TEMPLATES_DIR, arabic_date
from mailer.signup import Consent
from mailer.tokens import Tokens
from mailer.web.waker import Waker

CADENCES = (
    (Cadence.INSTANT, "تنبيهات فورية", "لحظة نشر الخبر"),
    (Cadence.DAILY, "نشرة يومية", "مرة كل يوم"),
    (Cadence.WEEKLY, "نشرة أسبوعية", "مرة كل أسبوع"),
)
PAUSES = ((1, "يوماً واحداً"), (3, "ثلاثة أيام"), (7, "أسبوعاً"), (14, "أسبوعين"), (30, "شهراً"))
TIME_ZONES = (
    ("Africa/Cairo", "القاهرة"),
    ("Asia/Damascus", "دمشق"),
    ("Asia/Beirut", "بيروت"),
    ("Asia/Amman", "عمّان"),
    ("Asia/Hebron", "فلسطين (الضفة الغربية)"),
    ("Asia/Gaza", "فلسطين (غزة)"),
    ("Asia/Baghdad", "بغداد"),
    ("Asia/Riyadh", "الرياض"),
    ("Asia/Kuwait", "الكويت"),
    ("Asia/Bahrain", "المنامة"),
    ("Asia/Qatar", "الدوحة"),
    ("Asia/Dubai", "دبي وأبوظبي"),
    ("Asia/Muscat", "مسقط"),
    ("Asia/Aden", "عدن وصنعاء"),
    ("Africa/Khartoum", "الخرطوم"),
    ("Africa/Tripoli", "طرابلس"),
    ("Africa/Tunis", "تونس"),
    ("Africa/Algiers", "الجزائر"),
    ("Africa/Casablanca", "الدار البيضاء"),
    ("Africa/Nouakchott", "نواكشوط"),
    ("Europe/Istanbul", "إسطنبول"),
    ("Europe/London", "لندن"),
    ("Europe/Paris", "باريس"),
    ("Europe/Berlin", "برلين"),
    ("America/New_York", "نيويورك"),
    ("America/Toronto", "تورونتو"),
    ("Australia/Sydney", "سيدني"),
    ("UTC", "التوقيت العالمي (UTC)"),
)
#: Token pages must not be cached, framed, or leak their URL (the token) in a Referer.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Pages:
    """Renders ``templates/web/<name>.html`` into responses with the headers above."""

    def __init__(self, settings: Settings, csrf: Csrf) -> None:
        self.csrf = csrf
        self._secure = settings.base_url.startswith("https://")
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "web"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            site_name=settings.site_name,
            site_url=settings.site_url,
            cadences=CADENCES,
            pauses=PAUSES,
            csrf_field=FIELD,
        )
        self._env.filters["arabic_date"] = lambda value, tz: arabic_date(value, settings, tz)

    def render(
        self,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        request: Request | None = None,
    ) -> HTMLResponse:
        """The page; with ``request``, a fresh CSRF field (and its cookie) for its forms."""
        values = dict(context or {})
        seed = None
        if request is not None:
            seed, values["csrf_token"] = self.csrf.issue(request.cookies.get(COOKIE))
        html = self._env.get_template(f"{name}.html").render(values)
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        if seed is not None:
            response.set_cookie(
                COOKIE, seed, httponly=True, samesite="lax", secure=self._secure, path="/"
            )
        return response

    def error(self, title: str, message: str, status: int, *, retry: str = "") -> HTMLResponse:
        """A clear Arabic error page; ``retry`` is an optional link to start again."""
        return self.render(
            "error", {"title": title, "message": message, "retry": retry}, status=status
        )

    def bad_link(self) -> HTMLResponse:
        return self.error(
            "رابط غير صالح",
            "هذا الرابط غير صالح أو تم تعديله. استخدم الرابط الموجود في آخر رسالة وصلتك.",
            400,
        )

    def csrf_failed(self, retry: str) -> HTMLResponse:
        return self.error(
            "انتهت صلاحية الصفحة",
            "لم نتمكن من التحقق من هذا الطلب: ربما انتهت صلاحية الصفحة أو أن المتصفح يمنع "
            "ملفات تعريف الارتباط. افتح الصفحة من جديد وحاول مرة أخرى.",
            403,
            retry=retry,
        )

    def gone(self) -> HTMLResponse:
        return self.error(
            "لا يوجد اشتراك",
            "لم نعد نحتفظ بأي بيانات لهذا الاشتراك: ربما حُذفت بطلبك أو لأنه لم يُؤكَّد في "
            "الوقت المحدد. يمكنك الاشتراك من جديد في أي وقت.",
            410,
            retry="/subscribe",
        )


def redirect(url: str) -> Response:
    """See-other after a successful form POST, so a reload does not post again."""
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def client_ip(request: Request) -> str:
    """The client address as the server sees it (behind a proxy, run uvicorn with
    ``--proxy-headers --forwarded-allow-ips`` so this is the reader's, not the proxy's)."""
    return request.client.host if request.client else "unknown"


@dataclass
class Web:
    """One deployment's reader-side objects, shared by its routes."""

    settings: Settings
    engine: Engine
    tokens: Tokens
    csrf: Csrf
    pages: Pages
    waker: Waker

    @classmethod
    def create(
        cls, settings: Settings, engine: Engine, dispatcher: Dispatcher | None = None
    ) -> Web:
        tokens = Tokens(settings)
        csrf = Csrf(tokens)

        def load() -> Dispatcher:
            return dispatcher or load_dispatcher(settings.dispatcher)

        waker = Waker(load, settings.wake_linger_seconds)
        return cls(settings, engine, tokens, csrf, Pages(settings, csrf), waker)

    def csrf_ok(self, request: Request, form: FormData) -> bool:
        """The form's CSRF field matches this browser's cookie."""
        value = form.get(FIELD)
        return self.csrf.verify(
            request.cookies.get(COOKIE), value if isinstance(value, str) else None
        )

    def wake(self, queue: str, message_id: int | None) -> None:
        """Dispatch a committed message (see :mod:`mailer.web.waker`)."""
        if message_id is not None:
            self.waker.wake(queue, message_id)


def consent(request: Request, source: str = "web") -> Consent:
    """The consent record of a request: client address, user agent, source."""
    return Consent(client_ip(request), request.headers.get("user-agent"), source)
