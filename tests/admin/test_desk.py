"""The operators' and admins' desk: schedules, readers, suppressions, SMTP servers, API tokens
and the outbox of the built-in sink."""

from __future__ import annotations

import re
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import auth, schedules
from mailer.models import Schedule, SmtpServer, Subscriber, Suppression, utcnow
from mailer.sink import start_sink
from tests.admin.world import AdminWorld

DAMASCUS = ZoneInfo("Asia/Damascus")


def schedule_form(**values: str) -> dict[str, object]:
    form: dict[str, object] = {
        "topic": "syria",
        "cadence": "daily",
        "mode": "at",
        "at": "07:30",
        "timezone": "Asia/Damascus",
    }
    return form | values


def test_a_schedule_shows_its_next_five_runs_in_its_own_zone(world: AdminWorld) -> None:
    answer = world.post("operator", "/admin/schedules", schedule_form(weekdays=["sun", "wed"]))
    assert answer.headers["location"] == "/admin/schedules?msg=schedule_added"
    page = world.client("operator").get("/admin/schedules").text
    runs = re.findall(r'<time datetime="([^"]+)">([^<]+)</time>', page)
    assert len(runs) == 5
    for stamp, shown in runs:
        local = datetime.fromisoformat(stamp).astimezone(DAMASCUS)
        assert (local.hour, local.minute) == (7, 30)
        assert local.weekday() in (2, 6)  # Wednesday, Sunday
        assert shown.endswith("٠٧:٣٠") and shown.startswith(("الأحد", "الأربعاء"))
    assert "يومية · سوريا · الساعة ٠٧:٣٠ أيام الأربعاء، الأحد" in page


def test_a_bad_schedule_is_refused_with_the_reason(world: AdminWorld) -> None:
    answer = world.post("operator", "/admin/schedules", schedule_form(mode="cron", cron="61 * * *"))
    assert answer.status_code == 422
    assert "تعذّر إضافة الموعد" in answer.text and "five valid fields" in answer.text
    weekly = world.post("operator", "/admin/schedules", schedule_form(cadence="weekly"))
    assert weekly.status_code == 422 and "needs weekdays" in weekly.text


def test_editing_a_schedule_changes_it_without_a_catch_up_send(world: AdminWorld) -> None:
    world.post("operator", "/admin/schedules", schedule_form())
    with Session(world.engine) as session:
        schedule = session.scalars(select(Schedule)).one()
        schedule.created_at = utcnow() - timedelta(days=3)  # it has been running for days
        session.commit()
    # Move it to a time that already passed today: that slot must not fire as a catch-up.
    earlier = (datetime.now(DAMASCUS) - timedelta(hours=1)).strftime("%H:%M")
    answer = world.post("operator", "/admin/schedules/1", schedule_form(at=earlier))
    assert answer.headers["location"] == "/admin/schedules?msg=schedule_saved"
    with Session(world.engine) as session:
        schedule = session.scalars(select(Schedule)).one()
        assert schedule.at_time == earlier
        assert schedules.due_at(schedule, utcnow()) is None
    to_cron = world.post(
        "operator", "/admin/schedules/1", schedule_form(mode="cron", cron="0 6 * * 5")
    )
    assert to_cron.status_code == 303
    assert "cron 0 6 * * 5" in world.client("operator").get("/admin/schedules").text
    bad = world.post("operator", "/admin/schedules/1", schedule_form(timezone="Mars/Olympus"))
    assert bad.status_code == 422 and "unknown time zone" in bad.text
    with Session(world.engine) as session:
        assert session.scalars(select(Schedule)).one().cron == "0 6 * * 5"  # unchanged


def test_pausing_resuming_and_removing_a_schedule(world: AdminWorld) -> None:
    world.post("operator", "/admin/schedules", schedule_form())
    world.post("operator", "/admin/schedules/1/pause")
    page = world.client("operator").get("/admin/schedules").text
    assert "لن يُرسل حتى يُستأنف" in page and "<time" not in page
    world.post("operator", "/admin/schedules/1/resume")
    assert world.client("operator").get("/admin/schedules").text.count("<time") == 5
    world.post("operator", "/admin/schedules/1/remove")
    assert "لا توجد مواعيد بعد" in world.client("operator").get("/admin/schedules").text
    assert [a for _, a, _ in world.audit()] == [
        "schedule.add",
        "schedule.pause",
        "schedule.resume",
        "schedule.remove",
    ]


def test_a_reader_is_found_unsubscribed_and_suppressed(world: AdminWorld) -> None:
    world.add_readers(3)
    found = world.client("operator").get("/admin/readers", params={"q": "READER0002@example.com"})
    assert "reader0002@example.com" in found.text and "reader0001@example.com" not in found.text
    page = world.client("operator").get("/admin/readers/2").text
    assert "سجل الموافقة" in page and "import" in page  # the consent record's source
    assert "الأخبار العاجلة — فوري" in page

    world.post("operator", "/admin/readers/2/unsubscribe")
    with Session(world.engine) as session:
        reader = session.get(Subscriber, 2)
        assert reader is not None and reader.status == "unsubscribed"
        assert reader.subscriptions == []
    answer = world.post("operator", "/admin/readers/3/suppress")
    assert answer.headers["location"] == "/admin/readers/3?msg=suppressed"
    again = world.post("operator", "/admin/readers/3/suppress")
    assert again.headers["location"] == "/admin/readers/3?msg=already_suppressed"
    with Session(world.engine) as session:
        row = session.scalars(select(Suppression)).one()
        assert (row.email, row.source) == ("reader0003@example.com", "admin:operator")
    assert "محظور: manual" in world.client("operator").get("/admin/readers/3").text


def test_suppressions_are_added_searched_and_lifted(world: AdminWorld) -> None:
    added = world.post(
        "operator", "/admin/suppressions", {"email": "Spam@Example.com", "reason": "complaint"}
    )
    assert added.status_code == 303
    invalid = world.post("operator", "/admin/suppressions", {"email": "no-at-sign"})
    assert invalid.status_code == 422 and 'value="no-at-sign"' in invalid.text
    page = world.client("operator").get("/admin/suppressions", params={"q": "spam"}).text
    assert "Spam@example.com" in page and "complaint" in page
    with Session(world.engine) as session:
        suppression_id = session.scalars(select(Suppression.id)).one()
    world.post("operator", f"/admin/suppressions/{suppression_id}/remove")
    assert "القائمة فارغة" in world.client("operator").get("/admin/suppressions").text


def test_smtp_servers_are_managed_and_their_passwords_never_shown(world: AdminWorld) -> None:
    form = {"name": "relay", "url": "smtp://u:s3cret@relay.example.com:587?starttls=true"}
    world.post("admin", "/admin/smtp", form | {"weight": "3", "enabled": "on"})
    page = world.client("admin").get("/admin/smtp").text
    assert "s3cret" not in page and "u:***@relay.example.com" in page
    assert "سليم" in page
    world.post("admin", "/admin/smtp/1", {"weight": "5", "rate_per_second": "20"})  # unticked
    with Session(world.engine) as session:
        server = session.scalars(select(SmtpServer)).one()
        assert (server.weight, server.rate_per_second, server.enabled) == (5, 20.0, False)
        assert "s3cret" in server.url  # kept: an empty URL field changes nothing
        server.enabled, server.healthy, server.last_error = True, False, "connection refused"
        server.down_until = datetime.now(UTC) + timedelta(minutes=5)
        session.commit()
    unhealthy = world.client("admin").get("/admin/smtp").text
    assert "خارج الخدمة حتى" in unhealthy and "connection refused" in unhealthy
    bad = world.post("admin", "/admin/smtp", {"name": "x", "url": "http://nope"})
    assert bad.status_code == 422
    taken = world.post("admin", "/admin/smtp", form)
    assert taken.status_code == 409
    world.post("admin", "/admin/smtp/1/remove")
    assert "MAILER_SMTP_URL" in world.client("admin").get("/admin/smtp").text


def test_a_token_secret_is_shown_once_and_works_until_revoked(world: AdminWorld) -> None:
    created = world.post("admin", "/admin/tokens", {"name": "cms", "role": "editor"})
    assert created.status_code == 201
    match = re.search(r'<code class="secret" id="secret">([^<]+)</code>', created.text)
    assert match is not None
    secret = match.group(1)
    with Session(world.engine) as session:
        assert auth.authenticate(session, secret) is not None
    assert secret not in world.client("admin").get("/admin/tokens").text
    world.post("admin", "/admin/tokens/1/revoke")
    with Session(world.engine) as session:
        assert auth.authenticate(session, secret) is None
    assert world.post("admin", "/admin/tokens", {"role": "owner"}).status_code == 422


def test_the_outbox_shows_what_the_sink_received(world: AdminWorld) -> None:
    sink = start_sink("127.0.0.1", 0, world.settings.sink_dir)
    try:
        message = EmailMessage()
        message["From"], message["To"] = "news@example.com", "reader@example.com"
        message["Subject"] = "عاجل: رسالة في الصندوق"
        message.set_content("النص العادي")
        message.add_alternative("<p>النص <script>alert(1)</script>المنسق</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.send_message(message, from_addr="bounces+1@example.com")
    finally:
        sink.stop()
    listing = world.client("operator").get("/admin/outbox").text
    names = re.findall(r'href="/admin/outbox/([^"/]+)"', listing)
    assert len(names) == 1 and "عاجل: رسالة في الصندوق" in listing
    page = world.client("operator").get(f"/admin/outbox/{names[0]}").text
    assert "bounces+1@example.com" in page and "النص العادي" in page
    body = world.client("operator").get(f"/admin/outbox/{names[0]}/body.html")
    assert "<script>" in body.text  # shown as received, but in a sandbox that runs no script
    assert body.headers["content-security-policy"].startswith("sandbox;")
    raw = world.client("operator").get(f"/admin/outbox/{names[0]}/raw")
    assert raw.headers["content-type"].startswith("text/plain") and "Subject:" in raw.text
    none = world.client("operator").get("/admin/outbox", params={"q": "لا يوجد"}).text
    assert "لا رسائل تطابق البحث" in none
    for name in ("..%2F..%2Fmailer", "mailer", names[0] + "x"):
        assert world.client("operator").get(f"/admin/outbox/{name}").status_code == 404
