"""The preferences link of every email: ``GET/POST /preferences/{token}``, ``GET …/export``
(the reader's data as a JSON download) and ``POST …/delete`` (erasure).

The token (purpose ``preferences``) identifies the reader; every form also carries a CSRF
field. Successful changes answer with a redirect, so reloading the page posts nothing again.
Database work runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailer import readers, signup
from mailer.dispatch import ALERTS_QUEUE
from mailer.models import SubscriberStatus
from mailer.tokens import BadToken
from mailer.web.pages import HEADERS, TIME_ZONES, Web, consent, redirect

NOTICES = {
    "saved": "تم حفظ اختياراتك.",
    "sent": "أرسلنا إليك رسالة لتأكيد اشتراكك من جديد؛ اضغط الزر الذي فيها.",
}


def routes(web: Web) -> APIRouter:
    """The preferences routes of one deployment."""
    engine, pages = web.engine, web.pages
    router = APIRouter()

    def reader_of(token: str) -> int | None:
        try:
            return readers.read_preferences_token(web.tokens, token)
        except BadToken:
            return None

    def page(
        request: Request, token: str, subscriber_id: int, *, notice: str = "", error: str = ""
    ) -> HTMLResponse:
        prefs = readers.get_preferences(engine, subscriber_id)
        if prefs is None:
            return pages.gone()
        zones = list(TIME_ZONES)
        if prefs.timezone not in dict(zones):
            zones.insert(0, (prefs.timezone, prefs.timezone))
        context = {
            "prefs": prefs,
            "topics": readers.list_topics(engine),
            "zones": zones,
            "notice": notice,
            "error": error,
            "request_path": f"/preferences/{token}",
        }
        return pages.render("preferences", context, status=400 if error else 200, request=request)

    @router.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences_get(token: str, request: Request) -> HTMLResponse:
        subscriber_id = reader_of(token)
        if subscriber_id is None:
            return pages.bad_link()
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        return page(request, token, subscriber_id, notice=notice)

    def save(token: str, request: Request, form: FormData) -> Response:
        subscriber_id = reader_of(token)
        if subscriber_id is None:
            return pages.bad_link()
        if not web.csrf_ok(request, form):
            return pages.csrf_failed(f"/preferences/{token}")
        prefs = readers.get_preferences(engine, subscriber_id)
        if prefs is None:
            return pages.gone()
        action = form.get("action")
        try:
            if action == "save":
                pairs = (str(value).partition(":") for value in form.getlist("sub"))
                choices = {(slug, cadence) for slug, _, cadence in pairs}
                timezone = str(form.get("timezone") or prefs.timezone)
                name = str(form.get("name") or "")
                readers.check_choices(engine, choices, timezone)
                if prefs.status == SubscriberStatus.UNSUBSCRIBED and choices:
                    # Back from having left: choosing again takes a fresh confirmation.
                    readers.update_preferences(
                        engine, subscriber_id, name=name, choices=set(), timezone=timezone
                    )
                    queued = signup.resubscribe(
                        engine, subscriber_id, choices, consent(request, "preferences")
                    )
                    web.wake(ALERTS_QUEUE, queued)
                    return redirect(f"/preferences/{token}?done=sent")
                readers.update_preferences(
                    engine, subscriber_id, name=name, choices=choices, timezone=timezone
                )
            elif action in ("pause", "resume"):
                days = int(str(form.get("days") or 0)) if action == "pause" else 0
                readers.pause(engine, subscriber_id, days)
            elif action == "leave":
                readers.unsubscribe(engine, readers.Scope(subscriber_id, 0, readers.EVERYTHING))
                context = {"what": "كل الرسائل", "preferences": f"/preferences/{token}"}
                return pages.render("unsubscribed", context)
            else:
                return pages.error("طلب غير مفهوم", "لم نفهم هذا الطلب.", 400)
        except ValueError as exc:  # an unknown choice or time zone, a pause out of range
            return page(request, token, subscriber_id, error=str(exc) or "قيمة غير صالحة.")
        return redirect(f"/preferences/{token}?done=saved")

    @router.post("/preferences/{token}", response_model=None)
    async def preferences_post(token: str, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(save, token, request, form)

    @router.get("/preferences/{token}/export", response_model=None)
    def preferences_export(token: str) -> Response:
        subscriber_id = reader_of(token)
        if subscriber_id is None:
            return pages.bad_link()
        data = readers.export_data(engine, subscriber_id)
        if data is None:
            return pages.gone()
        body = json.dumps(data, ensure_ascii=False, indent=2)
        download = 'attachment; filename="my-newsletter-data.json"'
        headers = HEADERS | {"Content-Disposition": download}
        return Response(body, media_type="application/json; charset=utf-8", headers=headers)

    def delete(token: str, request: Request, form: FormData) -> HTMLResponse:
        subscriber_id = reader_of(token)
        if subscriber_id is None:
            return pages.bad_link()
        if not web.csrf_ok(request, form):
            return pages.csrf_failed(f"/preferences/{token}")
        if form.get("confirm") != "yes":
            error = "لتأكيد الحذف، ضع علامة في خانة التأكيد."
            return page(request, token, subscriber_id, error=error)
        if not readers.erase(engine, subscriber_id):
            return pages.gone()
        return pages.render("deleted")

    @router.post("/preferences/{token}/delete", response_class=HTMLResponse)
    async def preferences_delete(token: str, request: Request) -> HTMLResponse:
        form = await request.form()
        return await run_in_threadpool(delete, token, request, form)

    return router
