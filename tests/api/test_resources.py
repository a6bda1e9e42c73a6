"""Stories, subscribers, suppressions, schedules, SMTP servers, stats — and the audit log,
which gets one event for every state-changing route of the API."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.models import SmtpServer, Subscriber
from tests.api.conftest import World
from tests.support.smtp_server import ScriptedSMTPServer


def test_every_state_change_writes_one_audit_event(
    smtp_world: World, smtp: ScriptedSMTPServer
) -> None:
    world = smtp_world
    world.add_readers(3)
    admin = next(t["id"] for t in world.call("GET", "/tokens").json() if t["name"] == "admin-bot")
    covered: set[tuple[str, str]] = set()

    def change(method: str, template: str, action: str, body: Any = None, **ids: Any) -> Any:
        before = len(world.audit())
        answer = world.call(method, template.format(**ids), json=body)
        assert answer.status_code < 300, (template, answer.status_code, answer.text)
        new = world.audit()[before:]
        assert [(e.action, e.actor) for e in new] == [(action, f"token:{admin}:admin-bot")], (
            template,
            [e.action for e in new],
        )
        covered.add((method, "/api/v1" + template))
        return answer.json() if answer.status_code != 204 else None

    story = {"title": "عاجل", "url": "https://news.example.com/a", "topic": "syria"}
    story_id = change("POST", "/stories", "story.create", story)["id"]
    change("POST", "/stories", "story.update", story | {"summary": "ملخص"})
    change("POST", "/alerts/test", "test_send", {"story_id": story_id, "to": ["s@example.com"]})
    edition = change("POST", "/alerts", "alert.trigger", {"story_id": story_id})["edition_id"]
    for verb in ("pause", "resume"):
        change("POST", f"/editions/{{edition_id}}/{verb}", f"edition.{verb}", edition_id=edition)
    change(
        "POST",
        "/editions/{edition_id}/test",
        "test_send",
        {"to": ["s@example.com"]},
        edition_id=edition,
    )
    change(
        "POST", "/editions/{edition_id}/resend-failed", "edition.resend_failed", edition_id=edition
    )
    change("POST", "/editions/{edition_id}/cancel", "edition.cancel", edition_id=edition)
    change("POST", "/digests", "digest.send", {"topic": "syria", "cadence": "daily"})
    schedule = change(
        "POST", "/schedules", "schedule.add", {"topic": "syria", "cadence": "daily", "at": "07:00"}
    )["id"]
    for verb in ("pause", "resume"):
        change(
            "POST", f"/schedules/{{schedule_id}}/{verb}", f"schedule.{verb}", schedule_id=schedule
        )
    change("DELETE", "/schedules/{schedule_id}", "schedule.remove", schedule_id=schedule)
    change(
        "POST",
        "/subscribers/import",
        "subscribers.import",
        {"readers": [{"email": "new@example.com"}], "consented": True},
    )
    suppression = change("POST", "/suppressions", "suppression.add", {"email": "x@example.com"})
    change(
        "DELETE",
        "/suppressions/{suppression_id}",
        "suppression.remove",
        suppression_id=suppression["id"],
    )
    token = change("POST", "/tokens", "token.create", {"role": "editor", "name": "n"})["id"]
    change("DELETE", "/tokens/{token_id}", "token.revoke", token_id=token)
    server = change(
        "POST",
        "/smtp-servers",
        "smtp.add",
        {"name": "relay", "url": "smtp://u:p@relay.example.com:587"},
    )["id"]
    change("PATCH", "/smtp-servers/{server_id}", "smtp.update", {"weight": 3}, server_id=server)
    change("DELETE", "/smtp-servers/{server_id}", "smtp.remove", server_id=server)

    spec = world.client.get("/openapi.json").json()
    changing = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
        if method != "get"
    }
    assert changing == covered, (
        f"state-changing routes without an audit check: {changing - covered}"
    )


def test_stories_are_listed_validated_and_found(world: World) -> None:
    made = world.call(
        "POST",
        "/stories",
        "editor",
        json={
            "title": "سوريا: خبر",
            "url": "https://news.example.com/s1",
            "topic": "syria",
            "body_html": "<p onclick='x()'>نص</p><script>alert(1)</script>",
            "published_at": "2026-11-25T08:00:00+02:00",
        },
    )
    assert made.status_code == 201, made.text
    world.call(
        "POST",
        "/stories",
        "editor",
        json={"title": "مصر", "url": "https://news.example.com/e1", "topic": "egypt"},
    )
    listed = world.call("GET", "/stories", "editor", params={"topic": "syria"}).json()
    assert [s["title"] for s in listed] == ["سوريا: خبر"]
    assert listed[0]["published_at"] == "2026-11-25T06:00:00Z"
    assert world.call("GET", f"/stories/{made.json()['id']}", "editor").json()["topic"] == "syria"
    unknown = world.call(
        "POST",
        "/stories",
        "editor",
        json={"title": "t", "url": "https://x.example.com/", "topic": "sport"},
    )
    assert unknown.status_code == 422 and "sport" in unknown.json()["detail"][0]["msg"]
    naive = world.call(
        "POST",
        "/stories",
        "editor",
        json={
            "title": "t",
            "url": "https://x.example.com/",
            "topic": "syria",
            "published_at": "2026-11-25T08:00:00",
        },
    )
    assert naive.status_code == 422
    slugs = [t["slug"] for t in world.call("GET", "/topics", "operator").json()]
    assert "breaking" in slugs and "syria" in slugs


def test_subscribers_search_page_export_and_import(world: World) -> None:
    world.add_readers(5, name="قارئ")
    page = world.call("GET", "/subscribers", "operator", params={"limit": 2}).json()
    assert [s["email"] for s in page["items"]] == [
        "reader0001@example.com",
        "reader0002@example.com",
    ]
    rest = world.call(
        "GET", "/subscribers", "operator", params={"limit": 10, "after": page["next_after"]}
    ).json()
    assert len(rest["items"]) == 3 and rest["next_after"] is None
    exact = world.call("GET", "/subscribers", "operator", params={"q": "READER0004@Example.com"})
    assert [s["email"] for s in exact.json()["items"]] == ["reader0004@example.com"]
    wildcard = world.call("GET", "/subscribers", "operator", params={"q": "reader%1"}).json()
    assert wildcard["items"] == []  # typed characters match themselves
    part = world.call("GET", "/subscribers", "operator", params={"q": "0003"}).json()["items"]
    assert [s["email"] for s in part] == ["reader0003@example.com"]
    one = world.call("GET", f"/subscribers/{part[0]['id']}", "operator").json()
    assert one["subscriptions"] == [{"topic": "breaking", "cadence": "instant"}]

    imported = world.call(
        "POST",
        "/subscribers/import",
        "operator",
        json={
            "readers": [
                {"email": "Nour@Example.com", "topics": ["syria"], "cadence": "daily"},
                {"email": "not-an-address"},
                {"email": "x@example.com", "topics": ["sport"]},
                {"email": "reader0001@example.com"},
            ]
        },
    )
    assert imported.status_code == 200
    body = imported.json()
    assert (body["read"], body["added"], body["existing"]) == (4, 1, 1)
    assert [e["line"] for e in body["errors"]] == [2, 3]
    pending = world.call("GET", "/subscribers", "operator", params={"status": "pending"}).json()
    assert [s["email"] for s in pending["items"]] == ["Nour@example.com"]

    exported = world.call("GET", "/subscribers/export", "operator")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert len(lines) == 6 and lines[0]["name"] == "قارئ"
    assert [e.action for e in world.audit()][-1] == "subscribers.export"


def test_a_suppression_keeps_the_reader_out_of_the_next_alert(world: World) -> None:
    world.add_readers(3)
    added = world.call(
        "POST",
        "/suppressions",
        "operator",
        json={"email": "READER0002@example.com", "reason": "complaint"},
    )
    assert added.status_code == 201
    again = world.call(
        "POST", "/suppressions", "operator", json={"email": "reader0002@example.com"}
    )
    assert again.status_code == 200 and again.json()["id"] == added.json()["id"]
    assert again.json()["reason"] == "complaint"
    alert = world.call("POST", "/alerts", "editor", json={"story_id": world.add_story()})
    assert alert.json()["planned"] == 2
    listed = world.call("GET", "/suppressions", "operator", params={"q": "reader0002"}).json()
    assert listed["total"] == 1 and listed["items"][0]["email"] == "READER0002@example.com"
    bad = world.call("POST", "/suppressions", "operator", json={"email": "a\r\nBcc: x@y.z"})
    assert bad.status_code == 422
    path = f"/suppressions/{added.json()['id']}"
    assert world.call("DELETE", path, "operator").status_code == 204
    assert world.call("DELETE", path, "operator").status_code == 404


def test_schedules_show_their_next_runs_and_can_be_paused(world: World) -> None:
    made = world.call(
        "POST",
        "/schedules",
        "operator",
        json={"topic": "syria", "cadence": "weekly", "at": "7:30", "weekdays": "fri"},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["at"] == "07:30" and len(body["next_runs"]) == 5
    assert (
        world.call(
            "POST",
            "/schedules",
            "operator",
            json={"topic": "syria", "at": "07:00", "timezone": "Mars/Olympus"},
        ).status_code
        == 422
    )
    paused = world.call("POST", f"/schedules/{body['id']}/pause", "operator").json()
    assert paused["enabled"] is False and paused["next_runs"] == []
    assert [s["id"] for s in world.call("GET", "/schedules", "operator").json()] == [body["id"]]
    assert world.call("DELETE", f"/schedules/{body['id']}", "operator").status_code == 204
    assert world.call("POST", f"/schedules/{body['id']}/resume", "operator").status_code == 404


def test_smtp_servers_never_show_their_password(world: World) -> None:
    url = "smtp://user:s3cret@relay.example.com:587?starttls=true"
    made = world.call("POST", "/smtp-servers", json={"name": "relay", "url": url})
    assert made.status_code == 201, made.text
    assert made.json()["url"] == "smtp://user:***@relay.example.com:587?starttls=true"
    assert "s3cret" not in world.call("GET", "/smtp-servers").text
    assert "s3cret" not in json.dumps([e.details for e in world.audit()])
    with Session(world.engine) as session:
        assert session.scalar(select(SmtpServer.url)) == url
    dup = world.call("POST", "/smtp-servers", json={"name": "relay", "url": "smtp://h"})
    assert dup.status_code == 409
    bad = world.call("POST", "/smtp-servers", json={"name": "x", "url": "http://h"})
    assert bad.status_code == 422 and "smtp://" in bad.json()["detail"][0]["msg"]
    changed = world.call("PATCH", f"/smtp-servers/{made.json()['id']}", json={"enabled": False})
    assert changed.json()["enabled"] is False and changed.json()["name"] == "relay"


def test_stats_count_readers_editions_and_the_days_messages(world: World) -> None:
    world.add_readers(4)
    with world.engine.begin() as conn:
        conn.execute(
            update(Subscriber)
            .where(Subscriber.email == "reader0004@example.com")
            .values(status="unsubscribed")
        )
    world.call("POST", "/alerts", "editor", json={"story_id": world.add_story()})
    world.drain()
    stats = world.call("GET", "/stats", "operator").json()
    assert stats == {
        "readers": {"active": 3, "unsubscribed": 1},
        "editions": {"sending": 1},
        "deliveries_24h": {"sent": 3},
    }
    events = world.call("GET", "/audit", params={"action": "alert.trigger"}).json()
    assert [e["target"] for e in events] == ["edition:1"]
