"""Reader pages reached from emails: ``GET/POST /unsubscribe/{token}``.

GET only shows a page with a button, so a link scanner that fetches the URL changes nothing.
POST is both that button and the RFC 8058 one-click request mail clients send (body
``List-Unsubscribe=One-Click``, urlencoded or multipart, no cookies): the signed token in the
URL is what authenticates it, so it needs no CSRF token. It is idempotent and answers 200.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from mailer.config import Settings
from mailer.readers import describe as describe_scope
from mailer.readers import read_unsubscribe_token, unsubscribe
from mailer.tokens import BadToken, Tokens

PAGE = """<!doctype html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:Tahoma,Arial,sans-serif;direction:rtl;text-align:right;max-width:36rem;
margin:2rem auto;padding:0 1rem;line-height:1.7}}button{{font:inherit;padding:.6rem 1.2rem;
margin:.3rem 0}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status)


def bad_link() -> HTMLResponse:
    return page(
        "رابط غير صالح",
        "<p>هذا الرابط غير صالح أو تم تعديله. استخدم الرابط الموجود في آخر رسالة وصلتك.</p>",
        400,
    )


def router(settings: Settings, engine: Engine) -> APIRouter:
    tokens = Tokens(settings)
    routes = APIRouter()

    @routes.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> HTMLResponse:
        try:
            scope = read_unsubscribe_token(tokens, token)
        except BadToken:
            return bad_link()
        what = escape(describe_scope(engine, scope))
        return page(
            "إلغاء الاشتراك",
            f"<p>هل تريد إلغاء اشتراكك في {what}؟</p>"
            f'<form method="post"><button name="List-Unsubscribe" value="One-Click">'
            f"إلغاء الاشتراك في {what}</button></form>"
            '<form method="post"><button name="scope" value="all">'
            "إلغاء الاشتراك في كل الرسائل</button></form>",
        )

    @routes.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        try:
            scope = read_unsubscribe_token(tokens, token)
        except BadToken:
            return bad_link()
        form = await request.form()
        everything = form.get("scope") == "all"
        unsubscribe(engine, scope, everything=everything)
        what = "كل الرسائل" if everything else describe_scope(engine, scope)
        return page("تم إلغاء الاشتراك", f"<p>لن تصلك بعد الآن رسائل {escape(what)}.</p>")

    return routes
