"""Editions in the admin: live progress, pause/resume/cancel/resend, failures by reason,
previews, sending a digest, and the dashboard."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from mailer import editions
from mailer.rendering import Renderer
from mailer.service import Service
from mailer.transport import MemoryTransport, SendResult
from tests.admin.world import AdminWorld


def service(world: AdminWorld) -> Service:
    return Service(world.engine, world.settings, world.dispatcher, Renderer(world.settings))


def progress(world: AdminWorld, edition_id: int, role: str = "operator") -> dict[str, object]:
    answer = world.client(role).get(f"/admin/editions/{edition_id}/progress.json")
    assert answer.status_code == 200
    data: dict[str, object] = answer.json()
    return data


def finish(world: AdminWorld, edition_id: int) -> None:
    """What the sweeper does once no delivery is open."""
    with Session(world.engine) as session, session.begin():
        editions.finish_if_done(session, edition_id)


def test_pause_resume_and_cancel_from_the_edition_page(world: AdminWorld) -> None:
    world.add_readers(120)
    edition_id = service(world).trigger_alert(world.add_story()).edition_id
    world.dispatcher.sent.clear()  # nothing sent yet: the edition waits at 0 %
    page = world.client("operator").get(f"/admin/editions/{edition_id}")
    assert 'data-percent="0"' in page.text and 'data-status="sending"' in page.text
    assert progress(world, edition_id)["counts"] == {"queued": 120}

    paused = world.post("operator", f"/admin/editions/{edition_id}/pause")
    assert paused.headers["location"] == f"/admin/editions/{edition_id}?msg=paused"
    assert progress(world, edition_id)["status"] == "paused"
    world.drain()  # nothing was queued while paused
    assert world.transport.sent == []

    world.post("operator", f"/admin/editions/{edition_id}/resume")
    assert progress(world, edition_id)["status"] == "sending"
    assert world.dispatcher.sent  # resuming wakes the workers for what is left
    world.drain()
    assert progress(world, edition_id)["percent"] == 100

    # A second resume is refused with the reason, and changes nothing.
    again = world.post("operator", f"/admin/editions/{edition_id}/resume")
    assert again.status_code == 409
    assert "حالة الإرسال لا تسمح بذلك" in again.text
    actions = [a for _, a, t in world.audit() if t == f"edition:{edition_id}"]
    assert actions == ["edition.pause", "edition.resume"]


def test_cancel_stops_every_reader_not_yet_sent(world: AdminWorld) -> None:
    world.add_readers(30)
    edition_id = service(world).trigger_alert(world.add_story()).edition_id
    world.post("operator", f"/admin/editions/{edition_id}/cancel")
    state = progress(world, edition_id)
    assert (state["status"], state["counts"], state["final"]) == (
        "cancelled",
        {"cancelled": 30},
        True,
    )
    world.drain()
    assert world.transport.sent == []


def test_failures_are_grouped_by_reason_and_can_be_resent(world: AdminWorld) -> None:
    addresses = world.add_readers(10)
    refused = {a: SendResult.from_reply(550, "5.7.1 policy rejection") for a in addresses[:4]}
    world.transport = MemoryTransport(script=refused)
    edition_id = service(world).trigger_alert(world.add_story()).edition_id
    world.drain()
    finish(world, edition_id)
    page = world.client("operator").get(f"/admin/editions/{edition_id}")
    row = re.search(r"<table id=\"failures\">.*?</table>", page.text, re.S)
    assert row is not None
    assert "5.7.1 policy rejection" in row.group(0) and ">٤<" in row.group(0)
    assert 'id="resend"' in page.text

    world.transport = MemoryTransport()  # the relay accepts them now
    answer = world.post("operator", f"/admin/editions/{edition_id}/resend-failed")
    assert answer.headers["location"].endswith("?msg=resent")
    world.drain()
    assert world.statuses(edition_id) == {"sent": 10}
    nothing = world.post("operator", f"/admin/editions/{edition_id}/resend-failed")
    assert nothing.headers["location"].endswith("?msg=nothing_to_resend")


def test_previews_show_one_readers_copy_at_two_widths(world: AdminWorld) -> None:
    world.add_readers(3)
    edition_id = service(world).trigger_alert(world.add_story("عاجل: معاينة")).edition_id
    page = world.client("operator").get(f"/admin/editions/{edition_id}/preview")
    assert page.text.count("<iframe") == 2
    assert "reader0001@example.com" in page.text
    email = world.client("operator").get(f"/admin/editions/{edition_id}/email.html")
    assert "reader0001@example.com" in email.text and "__MLR_" not in email.text
    assert email.headers["content-security-policy"].startswith("sandbox;")
    other = world.client("operator").get(
        f"/admin/editions/{edition_id}/email.html", params={"reader": "reader0003@example.com"}
    )
    assert "reader0003@example.com" in other.text
    stranger = world.client("operator").get(
        f"/admin/editions/{edition_id}/preview", params={"reader": "nobody@example.com"}
    )
    assert stranger.status_code == 404


def test_an_operator_sends_a_digest_now(world: AdminWorld) -> None:
    world.add_readers(5, topics=("syria",), cadence="daily")
    empty = world.post("operator", "/admin/editions/digest", {"topic": "syria", "cadence": "daily"})
    assert empty.headers["location"].endswith("?msg=digest_skipped")
    world.add_story("سوريا: خبر اليوم")
    answer = world.post(
        "operator", "/admin/editions/digest", {"topic": "syria", "cadence": "daily"}
    )
    assert answer.headers["location"].endswith("?msg=digest_started")
    page = world.client("operator").get(answer.headers["location"])
    assert "بدأ إرسال النشرة" in page.text and "النشرة اليومية" in page.text
    unknown = world.post(
        "operator", "/admin/editions/digest", {"topic": "mars", "cadence": "daily"}
    )
    assert unknown.status_code == 422


def test_the_dashboard_shows_readers_growth_and_latest_editions(world: AdminWorld) -> None:
    world.add_readers(12)
    sent = service(world).trigger_alert(world.add_story("عاجل: الأول")).edition_id
    world.drain()
    finish(world, sent)
    running = service(world).trigger_alert(world.add_story("عاجل: الثاني")).edition_id
    world.add_readers(3, topics=("syria",), cadence="daily", start=100)
    service(world).send_digest("syria", "daily")

    page = world.client("operator").get("/admin/").text
    assert re.search(r"نشط</small><strong>١٥</strong>", page)
    assert page.count('class="bar"') == 30  # one bar per day of the chart
    assert f'data-progress-url="/admin/editions/{running}/progress.json"' in page
    assert "عاجل: الأول" in page and "النشرة اليومية" in page

    # An editor sees alerts only, and no reader figures.
    editor = world.client("editor").get("/admin/").text
    assert "عاجل: الأول" in editor and "النشرة اليومية" not in editor
    assert "growth-chart" not in editor
    assert "/admin/readers" not in editor  # nor the operators' menu


def test_an_editor_watches_an_alert_but_cannot_control_it(world: AdminWorld) -> None:
    world.add_readers(2)
    edition_id = service(world).trigger_alert(world.add_story()).edition_id
    page = world.client("editor").get(f"/admin/editions/{edition_id}")
    assert page.status_code == 200
    assert 'id="pause"' not in page.text
    assert world.post("editor", f"/admin/editions/{edition_id}/pause").status_code == 403
