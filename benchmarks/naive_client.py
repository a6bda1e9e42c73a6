"""The yardstick: what most Python newsletter code does, per reader.

Render the templates with Jinja for this reader, inline the CSS with premailer, build an
``EmailMessage``, open a new SMTP connection, send, quit. Nothing is recorded anywhere (which
flatters it). Only the renderer is set up once, as any app would.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from mailer import placeholders as ph
from mailer.config import Settings
from mailer.rendering import Renderer, StoryView

KEY = "naive"


def personalised(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(ph.marker(name), value)
    return text


def naive_sender(
    index: int, args: tuple[dict[str, Any], list[StoryView], int, int]
) -> Callable[[], int]:
    settings_values, stories, port, count = args
    settings = Settings(**settings_values)
    renderer = Renderer(settings)

    def send(reader: int) -> None:
        email = f"reader{reader}@d{reader % 1000}.example.net"
        values = {
            ph.GREETING: "مرحباً قارئ،",
            ph.EMAIL: email,
            ph.UNSUBSCRIBE_URL: f"{settings.base_url}/unsubscribe/{reader}",
            ph.PREFERENCES_URL: f"{settings.base_url}/preferences/{reader}",
        }
        rendered = renderer.render_digest(
            stories, topic_name="سوريا", cadence="daily", issued_at=datetime.now(UTC)
        )
        msg = EmailMessage()
        msg["From"] = settings.sender
        msg["To"] = email
        msg["Subject"] = rendered.subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{KEY}.{index}x{reader}.bench@example.com>"
        msg["List-Unsubscribe"] = f"<{values[ph.UNSUBSCRIBE_URL]}>"
        msg.set_content(personalised(rendered.text, values))
        msg.add_alternative(personalised(rendered.html, values), subtype="html")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(msg, from_addr="bounces@example.com", to_addrs=[email])

    def run() -> int:
        for reader in range(count):
            send(reader)
        return count

    return run
