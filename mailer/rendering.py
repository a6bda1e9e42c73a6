"""Pure rendering of emails: templates and plain data in, subject + HTML + text out.

Each email is a folder ``templates/email/<name>/`` holding ``subject.txt``, ``body.txt`` and
``body.html``, the bodies extending ``templates/email/_base/``. Jinja2 renders them, then
premailer inlines ``style.css`` into the *rendered* HTML once (inlining a template would mangle
its tags). Per-reader values are unknown here: the templates emit the markers of
:mod:`mailer.placeholders`, which the message builder later swaps for each reader's values.
Nothing in this module touches a database or the network.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import jinja2
import premailer
from babel.dates import format_date, format_time
from hijridate import Gregorian
from markupsafe import Markup

from mailer import placeholders
from mailer.config import Settings

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
#: The newsroom's time zone: an edition is rendered once for everyone, so dates use this one.
NEWSROOM_TZ = "Africa/Cairo"

_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
_CADENCE_LABELS = MappingProxyType({"daily": "النشرة اليومية", "weekly": "النشرة الأسبوعية"})
_MARKERS = MappingProxyType({name: placeholders.marker(name) for name in placeholders.BODY_NAMES})
_BLANK_LINES = re.compile(r"\n{3,}")
_CSS_COMMENT = re.compile(r"/\*.*?\*/\s*", re.DOTALL)
_PREMAILER_OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "base_url": None,
        "remove_classes": False,
        # What cannot be inlined (the @media rules for phones) stays in a <style> block for the
        # clients that read it; the rest is inlined and not repeated there. Besides weight, the
        # repeated rules started 29 lines with ".", each of which SMTP must dot-stuff: a
        # 45 µs rewrite of every 38 KB digest instead of a 9 µs scan that finds nothing.
        "keep_style_tags": False,
        "strip_important": False,
        "disable_validation": True,
        # cssutils logs every vendor property (mso-hide, -ms-…) it does not know.
        "cssutils_logging_level": logging.CRITICAL,
        "allow_network": False,
        "allow_loading_external_files": False,
        # premailer would overwrite the templates' own align/width attributes from the CSS
        # (align="right" on the centred 600px column, width="100%" height="auto" on images).
        "disable_basic_attributes": ["align", "width", "height"],
    }
)


@dataclass(frozen=True)
class StoryView:
    """What a template may know about a story: plain data, never an ORM object."""

    title: str
    summary: str
    url: str
    published_at: datetime  # tz-aware UTC
    is_breaking: bool = False
    image_url: str | None = None
    topic_name: str = ""


@dataclass(frozen=True)
class RenderedEmail:
    """The three parts of an email, still holding the per-reader placeholder markers."""

    subject: str  # one line
    html: str  # full document, CSS inlined
    text: str  # plain-text alternative


def _local(value: datetime, tz: str) -> datetime:
    # SQLite hands datetimes back naive; everything is stored in UTC, so naive means UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(tz))


def _digits(text: str, settings: Settings) -> str:
    # Babel writes ar_EG dates with Latin digits; many newsrooms print Arabic-Indic ones.
    return text.translate(_ARABIC_INDIC) if settings.arabic_digits else text


def arabic_date(value: datetime, settings: Settings, tz: str = NEWSROOM_TZ) -> str:
    """The full date in ``settings.date_locale``, e.g. "الأربعاء، ٢٥ نوفمبر ٢٠٢٦"."""
    return _digits(
        format_date(_local(value, tz), format="full", locale=settings.date_locale), settings
    )


def arabic_time(value: datetime, settings: Settings, tz: str = NEWSROOM_TZ) -> str:
    """The local time of day in ``settings.date_locale``, e.g. "١١:٣٠ م"."""
    return _digits(
        format_time(_local(value, tz), format="short", locale=settings.date_locale), settings
    )


def hijri_date(value: datetime, settings: Settings, tz: str = NEWSROOM_TZ) -> str:
    """The Hijri (Umm al-Qura) date line, or "" when ``settings.hijri_date`` is off.

    Babel has no Hijri calendar, hence hijridate; it only covers 1343–1500 AH, and a date
    outside that range yields "" rather than failing a whole edition over a decorative line.
    """
    if not settings.hijri_date:
        return ""
    local = _local(value, tz)
    try:
        hijri = Gregorian(local.year, local.month, local.day).to_hijri()
    except OverflowError:
        return ""
    line = f"{hijri.day} {hijri.month_name('ar')} {hijri.year} {hijri.notation('ar')}"
    return _digits(line, settings)


def with_utm(url: str, settings: Settings, campaign: str) -> str:
    """``url`` with utm_source/utm_medium/utm_campaign added, keeping its own parameters.

    Keys the URL already has (say an editor's own utm_campaign) are left alone, not repeated.
    Raises ValueError for anything but an absolute http(s) URL: a ``javascript:`` or relative
    link must never reach a reader.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"story link is not an absolute http(s) URL: {url!r}")
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    wanted = (
        ("utm_source", settings.utm_source),
        ("utm_medium", settings.utm_medium),
        ("utm_campaign", campaign),
    )
    extra = [(key, value) for key, value in wanted if value and key not in present]
    if not parts.path:
        parts = parts._replace(path="/")
    if not extra:
        return urlunsplit(parts)
    # Append instead of re-encoding the whole query, so the site's parameters stay byte-exact.
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(query=query))


def _markers(html: str) -> Counter[str]:
    return Counter(placeholders.PATTERN.findall(html))


def _refuse_markers(stories: Sequence[StoryView], topic_name: str) -> None:
    # The message builder splits on markers: one typed into a title by an editor (or a feed)
    # would be filled with each reader's address or unsubscribe link.
    for value in (topic_name, *(f"{s.title}{s.summary}{s.url}{s.image_url}" for s in stories)):
        if placeholders.PATTERN.search(value):
            raise ValueError(f"story text contains a reserved placeholder marker: {value!r}")
    for story in stories:  # an image is fetched by the reader's client: web URLs only
        image = urlsplit((story.image_url or "").strip())
        if story.image_url and (image.scheme.lower() not in ("http", "https") or not image.netloc):
            raise ValueError(f"story image is not an absolute http(s) URL: {story.image_url!r}")


def _tidy_text(text: str) -> str:
    # Template tags leave blank-line runs and stray spaces; "-- " is the signature delimiter
    # that mail clients recognise, so its trailing space stays.
    lines = [line if line == "-- " else line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)) + "\n"


class Renderer:
    """Renders ``templates/email/<name>/`` into a :class:`RenderedEmail`.

    One instance per process is enough: the Jinja environment caches compiled templates and the
    stylesheet is read once.
    """

    def __init__(self, settings: Settings, templates_dir: Path | None = None) -> None:
        self.settings = settings
        root = templates_dir or TEMPLATES_DIR
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            # A typo in a template fails the render instead of sending an empty hole.
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates ship with the code: no stat() per render to look for changes.
            auto_reload=False,
        )
        self._env.filters.update(
            arabic_date=lambda value: arabic_date(value, settings),
            arabic_time=lambda value: arabic_time(value, settings),
            utm=lambda url, campaign: with_utm(url, settings, campaign),
            digits=lambda value: _digits(str(value), settings),
        )
        # Comments are for us, not for a million inboxes: drop them from the <style> block.
        css = _CSS_COMMENT.sub("", (root / "email" / "style.css").read_text(encoding="utf-8"))
        self._env.globals.update(
            css=Markup(css),  # our own file, not editor input
            ph=_MARKERS,
            site_name=settings.site_name,
            site_url=settings.site_url,
            site_host=urlsplit(settings.site_url).netloc or settings.site_url,
            postal_address=settings.postal_address,
        )

    def render(self, name: str, context: Mapping[str, object]) -> RenderedEmail:
        """Render the email folder ``name`` with ``context``; inline the HTML once.

        Raises ValueError if the subject is not a single line (it becomes a header), and
        RuntimeError if inlining changed the placeholder markers.
        """
        subject = self._env.get_template(f"email/{name}/subject.txt").render(context).strip()
        if len(subject.splitlines()) > 1 or "\r" in subject or "\n" in subject:
            raise ValueError(f"subject of {name!r} email must be one line: {subject!r}")
        text = self._env.get_template(f"email/{name}/body.txt").render(context)
        html = self._env.get_template(f"email/{name}/body.html").render(context)
        return RenderedEmail(subject=subject, html=self._inline(html), text=_tidy_text(text))

    def render_alert(self, story: StoryView, *, topic_name: str) -> RenderedEmail:
        """A breaking-news alert for one story: badge, headline, summary, read-more button."""
        _refuse_markers([story], topic_name)
        published = _local(story.published_at, NEWSROOM_TZ)
        context = {
            "story": story,
            "topic_name": topic_name,
            "campaign": f"alert-{published:%Y-%m-%d}",
        }
        return self.render("alert", context)

    def render_digest(
        self,
        stories: Sequence[StoryView],
        *,
        topic_name: str,
        cadence: str,
        issued_at: datetime,
    ) -> RenderedEmail:
        """A daily or weekly digest listing ``stories`` in the order given."""
        if cadence not in _CADENCE_LABELS:
            raise ValueError(f"unknown digest cadence {cadence!r}; expected daily or weekly")
        if not stories:
            raise ValueError("a digest needs at least one story")
        _refuse_markers(stories, topic_name)
        issued = _local(issued_at, NEWSROOM_TZ)
        context = {
            "stories": list(stories),
            "topic_name": topic_name,
            "cadence": cadence,
            "cadence_label": _CADENCE_LABELS[cadence],
            "issued_at": issued_at,
            "hijri": hijri_date(issued_at, self.settings),
            "campaign": f"digest-{cadence}-{issued:%Y-%m-%d}",
        }
        return self.render("digest", context)

    def _inline(self, html: str) -> str:
        before = _markers(html)
        inlined: str = premailer.Premailer(html, **_PREMAILER_OPTIONS).transform()
        # DESIGN §7: premailer/lxml rewrite hrefs; a damaged marker would send every reader
        # someone else's (or no) unsubscribe link, so refuse rather than send.
        if _markers(inlined) != before:
            raise RuntimeError("CSS inlining altered the per-reader placeholder markers")
        return inlined
