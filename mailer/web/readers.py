"""Reader pages: subscribe, confirm, unsubscribe, and (:mod:`mailer.web.preferences`) the
preferences link with the data download and erasure.

- ``GET/POST /subscribe``: the form; the answer is the same "check your email" page whatever
  the address's state (:mod:`mailer.signup`), rate-limited per client IP and per address,
  with a honeypot field (``website``) that bots fill and people never see.
- ``GET /confirm/{token}`` shows a button, ``POST`` confirms (once) and queues the welcome.
- ``GET /unsubscribe/{token}`` shows a button, so a link scanner changes nothing. ``POST`` is
  both that button and the RFC 8058 one-click request mail clients send (body
  ``List-Unsubscribe=One-Click``, urlencoded or multipart, no cookies): the signed token in
  the URL authenticates it, so it alone needs no CSRF token. Idempotent; 200.

Every other form carries a CSRF field (:mod:`mailer.csrf`). Tokens that are tampered with,
expired or for another purpose get an Arabic error page with a 4xx status and change nothing.
Messages are dispatched after their transaction committed. Database work runs in the thread
pool, never on the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from mailer import readers, signup
from mailer.config import Settings
from mailer.dispatch import ALERTS_QUEUE, Dispatcher
from mailer.ratelimit import Limiter, hit_all, load_limiter
from mailer.tokens import PREFERENCES, BadToken, ExpiredToken
from mailer.web import preferences
from mailer.web.pages import Web, client_ip, consent

HONEYPOT = "website"


def router(
    settings: Settings,
    engine: Engine,
    *,
    dispatcher: Dispatcher | None = None,
    limiter: Limiter | None = None,
) -> APIRouter:
    """The reader routes; ``dispatcher`` defaults to ``MAILER_DISPATCHER`` (loaded on first
    use) and ``limiter`` to ``MAILER_LIMITER``."""
    web = Web.create(settings, engine, dispatcher)
    pages, tokens = web.pages, web.tokens
    limits = limiter or load_limiter(settings.limiter, settings)
    routes = APIRouter()

    # -- subscribe ---------------------------------------------------------------------------

    def subscribe_form(
        request: Request, values: dict[str, Any] | None = None, *, status: int = 200
    ) -> HTMLResponse:
        context = {
            "topics": readers.list_topics(engine),
            "email": "",
            "name": "",
            "chosen": ["breaking"],
            "cadence": "instant",
            "error": None,
        } | (values or {})
        return pages.render("subscribe", context, status=status, request=request)

    @routes.get("/subscribe", response_class=HTMLResponse)
    def subscribe_page(request: Request) -> HTMLResponse:
        return subscribe_form(request)

    def subscribe(request: Request, form: FormData) -> HTMLResponse:
        if not web.csrf_ok(request, form):
            return pages.csrf_failed("/subscribe")
        if form.get(HONEYPOT):  # a bot: it sees success, nothing happens
            return pages.render("check_email")
        asked = signup.SubscribeRequest(
            email=str(form.get("email") or ""),
            name=str(form.get("name") or ""),
            topics=tuple(str(t) for t in form.getlist("topics")),
            cadence=str(form.get("cadence") or ""),
            consent=consent(request),
        )
        over_ip_limit = False

        def allow(digest: str) -> bool:
            # Both limits in one round trip, once the address is known to be well formed (a
            # malformed one is refused before any database or mail work, limit or not).
            nonlocal over_ip_limit
            client_ok, address_ok = hit_all(
                limits,
                [
                    (f"subscribe:ip:{client_ip(request)}", settings.subscribe_limit_per_ip),
                    (f"subscribe:address:{digest}", settings.subscribe_limit_per_address),
                ],
            )
            over_ip_limit = not client_ok
            # Over the per-address limit: the same page, nothing sent (no mail bombing).
            return client_ok and address_ok

        try:
            done = signup.subscribe(engine, settings, asked, allow=allow)
        except signup.InvalidRequest as exc:  # a form error is not enumeration: say it
            values = {
                "email": asked.email,
                "name": asked.name,
                "chosen": list(asked.topics),
                "cadence": asked.cadence,
                "error": str(exc),
            }
            return subscribe_form(request, values, status=400)
        if over_ip_limit:
            return pages.error(
                "طلبات كثيرة",
                "وصلتنا طلبات كثيرة من جهازك في وقت قصير. انتظر قليلاً ثم حاول مرة أخرى.",
                429,
                retry="/subscribe",
            )
        web.wake(done.queue, done.message_id)
        return pages.render("check_email")

    @routes.post("/subscribe", response_class=HTMLResponse)
    async def subscribe_post(request: Request) -> HTMLResponse:
        form = await request.form()
        return await run_in_threadpool(subscribe, request, form)

    # -- confirm -----------------------------------------------------------------------------

    def confirm_answer(state: signup.ConfirmState, request: Request) -> HTMLResponse:
        if state == signup.ConfirmState.READY:
            return pages.render("confirm", request=request)
        if state == signup.ConfirmState.CONFIRMED:
            return pages.render("confirmed")
        if state == signup.ConfirmState.ALREADY:
            return pages.render("already_confirmed")
        if state == signup.ConfirmState.STALE:
            return pages.error(
                "رابط قديم",
                "لم يعد هذا الرابط صالحاً: أُرسل بعده رابط أحدث، أو أُلغي الاشتراك منذ ذلك الحين. "
                "استخدم الرابط في آخر رسالة تأكيد وصلتك، أو اشترك من جديد.",
                409,
                retry="/subscribe",
            )
        return pages.gone()

    def confirm_token(token: str) -> tuple[int, int] | HTMLResponse:
        try:
            return signup.read_confirm_token(settings, tokens, token)
        except ExpiredToken:
            return pages.error(
                "انتهت صلاحية الرابط",
                f"رابط التأكيد صالح لمدة {settings.confirm_max_age_days} أيام فقط وقد انتهت "
                "مدته. اشترك من جديد لتصلك رسالة تأكيد جديدة.",
                410,
                retry="/subscribe",
            )
        except BadToken:
            return pages.bad_link()

    @routes.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm_page(token: str, request: Request) -> HTMLResponse:
        found = confirm_token(token)
        if isinstance(found, HTMLResponse):
            return found
        return confirm_answer(signup.confirm_state(engine, *found), request)

    def confirm(token: str, request: Request, form: FormData) -> HTMLResponse:
        found = confirm_token(token)
        if isinstance(found, HTMLResponse):
            return found
        if not web.csrf_ok(request, form):
            return pages.csrf_failed(f"/confirm/{token}")
        state, welcome = signup.confirm(engine, *found, consent(request))
        web.wake(ALERTS_QUEUE, welcome)
        return confirm_answer(state, request)

    @routes.post("/confirm/{token}", response_class=HTMLResponse)
    async def confirm_post(token: str, request: Request) -> HTMLResponse:
        form = await request.form()
        return await run_in_threadpool(confirm, token, request, form)

    # -- unsubscribe -------------------------------------------------------------------------

    @routes.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> HTMLResponse:
        try:
            scope = readers.read_unsubscribe_token(tokens, token)
        except BadToken:
            return pages.bad_link()
        context = {"what": readers.describe(engine, scope), "everything": scope.everything}
        return pages.render("unsubscribe", context)

    def unsubscribe(token: str, form: FormData) -> HTMLResponse:
        try:
            scope = readers.read_unsubscribe_token(tokens, token)
        except BadToken:
            return pages.bad_link()
        everything = form.get("scope") == "all" or scope.everything
        readers.unsubscribe(engine, scope, everything=everything)
        what = "كل الرسائل" if everything else readers.describe(engine, scope)
        back = f"/preferences/{tokens.sign(PREFERENCES, scope.subscriber_id)}"
        return pages.render("unsubscribed", {"what": what, "preferences": back})

    @routes.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        form = await request.form()
        return await run_in_threadpool(unsubscribe, token, form)

    routes.include_router(preferences.routes(web))
    return routes
