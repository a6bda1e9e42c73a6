"""Stories (editors): list and search, add, import a feed, and the breaking-alert steps.

The alert is sent in two steps: a confirmation page (how many readers it reaches, the email
as they will see it, an optional test send to seed addresses), then the send itself, after
which the editor lands on the alert's live progress page.
"""

import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailer import audit, editions, feeds, operations, stories
from mailer.addresses import InvalidAddress
from mailer.admin.core import AdminRoute, Posted, Ui
from mailer.admin.preview import sample_html
from mailer.admin.session import AdminUser
from mailer.admin.views import EMAIL_HEADERS, redirect
from mailer.auth import Area
from mailer.models import Cadence, Edition, EditionKind, Story, Subscriber, Topic
from mailer.rendering import NEWSROOM_TZ

PAGE = 50
MAX_FEED_BYTES = 5 * 1024 * 1024
_SPLIT = re.compile(r"[\s,;،]+")


def topics(session: Session) -> list[Topic]:
    return list(session.scalars(select(Topic).order_by(Topic.position, Topic.id)))


def alert_reach(session: Session, story: Story) -> int:
    """How many readers the story's alert would reach now (the planner's own rule)."""
    draft = Edition(kind=EditionKind.ALERT, topic_id=story.topic_id)
    topic_ids = editions.topic_ids_for(session, draft)
    rule = editions.eligible(Subscriber.id, topic_ids, Cadence.INSTANT)
    return int(session.scalar(select(func.count()).select_from(Subscriber).where(rule)) or 0)


def alert_of(session: Session, story_id: int) -> int | None:
    return session.scalar(
        select(Edition.id).where(Edition.kind == EditionKind.ALERT, Edition.story_id == story_id)
    )


def parse_local(value: str) -> datetime | None:
    """A ``datetime-local`` field, read in the newsroom's zone."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(NEWSROOM_TZ))


def routes(ui: Ui) -> APIRouter:
    router = APIRouter(route_class=AdminRoute)
    Editor = Annotated[AdminUser, Depends(ui.viewer(Area.STORIES))]
    EditorPost = Annotated[Posted, Depends(ui.poster(Area.STORIES))]
    Alerter = Annotated[AdminUser, Depends(ui.viewer(Area.ALERTS))]
    AlerterPost = Annotated[Posted, Depends(ui.poster(Area.ALERTS))]

    def story_or_404(request: Request, session: Session, story_id: int) -> Story:
        story = session.get(Story, story_id)
        if story is None:
            raise ui.not_found(request, "هذا الخبر")
        return story

    def listing(request: Request, *, status: int = 200, **extra: Any) -> Response:
        q = request.query_params.get("q", "").strip()
        topic = request.query_params.get("topic", "")
        before = request.query_params.get("before", "")
        with ui.session() as session:
            query = select(Story).join(Topic).order_by(Story.id.desc()).limit(PAGE)
            if q:
                text = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = query.where(Story.title.ilike(f"%{text}%", escape="\\"))
            if topic:
                query = query.where(Topic.slug == topic)
            if before.isdigit():
                query = query.where(Story.id < int(before))
            found = list(session.scalars(query))
            alerts = dict(
                session.execute(
                    select(Edition.story_id, Edition.id).where(
                        Edition.kind == EditionKind.ALERT,
                        Edition.story_id.in_([s.id for s in found]),
                    )
                ).all()
            )
            context = {
                "title": "الأخبار",
                "stories": found,
                "alerts": alerts,
                "topics": topics(session),
                "q": q,
                "topic": topic,
                "more": found[-1].id if len(found) == PAGE else None,
                "form": {},
                "feed_result": None,
            } | extra
            return ui.views.render(request, "stories", context, status=status)

    @router.get("/stories", include_in_schema=False)
    def stories_page(request: Request, user: Editor) -> Response:
        return listing(request)

    @router.post("/stories", include_in_schema=False)
    def add_story(request: Request, posted: EditorPost) -> Response:
        form = {k: posted.text(k) for k in ("title", "url", "topic", "summary", "published_at")}
        form["body_html"] = posted.text("body_html")
        breaking = posted.text("breaking") == "on"
        error = ""
        if not form["title"] or not form["url"].startswith(("http://", "https://")):
            error = "اكتب عنوان الخبر ورابطه الكامل (يبدأ بـ https://)."
        else:
            try:
                data = stories.StoryInput(
                    title=form["title"],
                    url=form["url"],
                    topic=form["topic"],
                    summary=form["summary"],
                    body_html=form["body_html"],
                    is_breaking=breaking,
                    published_at=parse_local(form["published_at"]),
                )
                with ui.session() as session:
                    story, created = stories.upsert_story(session, data)
                    action = "story.create" if created else "story.update"
                    audit.record(
                        session, posted.user.actor, action, f"story:{story.id}", {"url": story.url}
                    )
                    session.commit()
                return redirect(
                    f"/admin/stories/{story.id}", "story_added" if created else "story_updated"
                )
            except ValueError as exc:
                error = f"تعذّر حفظ الخبر: {exc}"
        form["breaking"] = "on" if breaking else ""
        return listing(request, form=form, error=error, status=422)

    @router.post("/stories/import", include_in_schema=False)
    async def import_feed(request: Request, posted: EditorPost) -> Response:
        # async only to read the upload; the import itself runs in a worker thread.
        upload = posted.file("file")
        content = await upload.read(MAX_FEED_BYTES + 1) if upload else None
        return await run_in_threadpool(_import, request, posted, content)

    def _import(request: Request, posted: Posted, content: bytes | None) -> Response:
        url, topic = posted.text("url"), posted.text("topic")
        try:
            if content is not None and len(content) > MAX_FEED_BYTES:
                raise feeds.FeedError("the file is larger than 5 MB")
            with ui.session() as session:
                if content is not None:
                    result = feeds.import_content(session, content, topic, "upload")
                elif url:
                    result = feeds.import_feed(session, url, topic, ui.settings)
                else:
                    raise feeds.FeedError("give the feed's URL or upload its file")
                details = {"source": result.source, "added": result.added}
                audit.record(session, posted.user.actor, "feed.import", f"topic:{topic}", details)
                session.commit()
        except ValueError as exc:  # FeedError, UnsafeURL, unknown topic
            return listing(request, error=f"تعذّر استيراد الموجز: {exc}", status=422)
        return listing(request, feed_result=result)

    @router.get("/stories/{story_id}", include_in_schema=False)
    def story_page(request: Request, story_id: int, user: Editor) -> Response:
        with ui.session() as session:
            story = story_or_404(request, session, story_id)
            context = {
                "title": story.title,
                "story": story,
                "alert_id": alert_of(session, story_id),
            }
            return ui.views.render(request, "story", context)

    def confirm_page(
        request: Request,
        story_id: int,
        tests: list[operations.TestResult] | None = None,
        error: str = "",
        seeds: str = "",
    ) -> Response:
        with ui.session() as session:
            story = story_or_404(request, session, story_id)
            existing = alert_of(session, story_id)
            if existing is not None and tests is None and not error:
                return redirect(f"/admin/editions/{existing}", "alert_exists")
            rendered = ui.api.service.renderer.render_alert(
                editions.story_view(story), topic_name=story.topic.name
            )
            context = {
                "title": "إرسال تنبيه عاجل",
                "story": story,
                "reach": alert_reach(session, story),
                "subject": rendered.subject,
                "tests": tests,
                "error": error,
                "seeds": seeds,
            }
            return ui.views.render(request, "alert_confirm", context, status=422 if error else 200)

    @router.get("/stories/{story_id}/alert", include_in_schema=False)
    def alert_page(request: Request, story_id: int, user: Alerter) -> Response:
        return confirm_page(request, story_id)

    @router.get("/stories/{story_id}/alert/preview.html", include_in_schema=False)
    def alert_preview(request: Request, story_id: int, user: Alerter) -> Response:
        # A page of its own rather than srcdoc: a srcdoc frame would inherit the admin's CSP,
        # which forbids the email's inline styles.
        with ui.session() as session:
            story = story_or_404(request, session, story_id)
            rendered = ui.api.service.renderer.render_alert(
                editions.story_view(story), topic_name=story.topic.name
            )
        return HTMLResponse(sample_html(rendered.html), headers=EMAIL_HEADERS)

    @router.post("/stories/{story_id}/alert/test", include_in_schema=False)
    def alert_test(request: Request, story_id: int, posted: AlerterPost) -> Response:
        seeds = posted.text("to")
        addresses = [a for a in _SPLIT.split(seeds) if a]
        if not addresses or len(addresses) > 20:
            return confirm_page(
                request, story_id, error="اكتب من عنوان واحد إلى ٢٠ عنواناً.", seeds=seeds
            )
        transport = ui.api.transport()
        try:
            results = operations.test_send_alert(
                ui.engine,
                ui.settings,
                transport,
                ui.api.service.renderer,
                story_id,
                addresses,
                posted.user.actor,
            )
        except operations.NotFound as exc:
            raise ui.not_found(request, "هذا الخبر") from exc
        except (InvalidAddress, ValueError) as exc:
            return confirm_page(request, story_id, error=f"عنوان غير صالح: {exc}", seeds=seeds)
        finally:
            transport.close()
        return confirm_page(request, story_id, tests=results, seeds=seeds)

    @router.post("/stories/{story_id}/alert", include_in_schema=False)
    def alert_send(request: Request, story_id: int, posted: AlerterPost) -> Response:
        try:
            started = ui.api.service.trigger_alert(story_id)
        except editions.EditionError as exc:
            raise ui.not_found(request, "هذا الخبر") from exc
        details = {"story_id": story_id, "created": started.created, "planned": started.planned}
        with ui.engine.begin() as conn:
            target = f"edition:{started.edition_id}"
            audit.record(conn, posted.user.actor, "alert.trigger", target, details)
        notice = "alert_started" if started.created else "alert_exists"
        return redirect(f"/admin/editions/{started.edition_id}", notice)

    return router
