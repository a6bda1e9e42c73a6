"""Rendering of the admin pages: Jinja2 templates in ``templates/admin/``, filters, headers.

One right-to-left base (``<html lang="ar" dir="rtl">``, a viewport for phones, Tahoma/Arial)
with the navigation the user's role may use. Templates autoescape; values are formatted in
the newsroom's locale and time zone. The Content-Security-Policy allows only this site's own
CSS and JS files (no inline script or style), and frames of this site (the email previews).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from mailer.admin import labels
from mailer.admin.session import FIELD, AdminUser
from mailer.config import Settings
from mailer.rendering import NEWSROOM_TZ, TEMPLATES_DIR

_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")

HEADERS = {
    # Pages show readers' data: never cached, never framed by another site.
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'self'"
    ),
}
#: For an email shown in a frame: no script, no plugins, no forms, its own origin (sandbox).
EMAIL_HEADERS = HEADERS | {
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "frame-ancestors 'self'"
    ),
}


class Views:
    """Renders ``templates/admin/<name>.html`` into responses."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._zone = ZoneInfo(NEWSROOM_TZ)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES_DIR / "admin"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            site_name=settings.site_name,
            labels=labels,
            csrf_field=FIELD,
            digits="arab" if settings.arabic_digits else "latn",
            zone_name=NEWSROOM_TZ,
        )
        self._env.filters.update(
            num=self.num, when=self.when, day=self.day, percent=self.percent, digits=self.digits
        )

    @property
    def globals(self) -> dict[str, Any]:
        """Values every template sees (the app adds the static files' version)."""
        return self._env.globals

    # -- formatting ----------------------------------------------------------------------------

    def digits(self, text: str) -> str:
        return text.translate(_ARABIC_INDIC) if self._settings.arabic_digits else text

    def num(self, value: float | int | None) -> str:
        """12345 → "١٢٬٣٤٥" (or "12,345" when the newsroom writes Latin digits)."""
        if value is None:
            return "—"
        if self._settings.arabic_digits:
            system = "default"  # the locale's own separators, digits converted below
            text = format_decimal(value, locale=self._settings.date_locale, numbering_system=system)
            return self.digits(text)
        return format_decimal(value, locale=self._settings.date_locale)

    def percent(self, fraction: float) -> str:
        return self.num(int(fraction * 100)) + "٪"

    def when(self, value: datetime | None, zone: str | None = None, pattern: str = "") -> str:
        """A moment in the newsroom's zone (or ``zone``), e.g. "٢٥ نوفمبر ٢٠٢٦، ١٠:٥٠"."""
        if value is None:
            return "—"
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        text = format_datetime(
            value,
            pattern or "d MMMM y، HH:mm",
            tzinfo=ZoneInfo(zone) if zone else self._zone,
            locale=self._settings.date_locale,
        )
        return self.digits(text)

    def day(self, value: date) -> str:
        """A calendar day, e.g. "٢٥ نوفمبر"."""
        return self.digits(format_date(value, "d MMMM", locale=self._settings.date_locale))

    # -- responses -----------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status: int = 200,
        user: AdminUser | None = None,
        csrf_token: str = "",
    ) -> HTMLResponse:
        """The page, with the signed-in user's navigation and CSRF token."""
        user = user or getattr(request.state, "admin_user", None)
        notice = labels.NOTICES.get(request.query_params.get("msg", ""), "")
        values: dict[str, Any] = {
            "user": user,
            "csrf_token": csrf_token or (user.csrf if user else ""),
            "nav": [item for item in labels.NAV if user and (item[2] is None or user.may(item[2]))],
            "path": request.url.path,
            "notice": notice,
            "error": None,
        }
        values.update(context or {})
        html = self._env.get_template(f"{name}.html").render(values)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def error(
        self, request: Request, title: str, message: str, status: int, back: str = ""
    ) -> Response:
        """An Arabic error page (or a JSON error for the ``.json`` endpoints)."""
        if request.url.path.endswith(".json"):
            return JSONResponse({"detail": message}, status_code=status, headers=HEADERS)
        context = {"title": title, "message": message, "back": back}
        return self.render(request, "error", context, status=status)


def redirect(url: str, notice: str = "") -> Response:
    """See-other after a form POST (a reload does not post again), with an optional notice."""
    if notice:
        assert notice in labels.NOTICES, notice
        url += ("&" if "?" in url else "?") + f"msg={notice}"
    return RedirectResponse(url, status_code=303, headers=HEADERS)
