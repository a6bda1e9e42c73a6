"""``/topics`` (every role) and ``/stories`` (editors): what alerts and digests are made of."""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from mailer import audit, stories
from mailer.api.deps import Api, Limit, not_found, unprocessable
from mailer.auth import Area, Principal
from mailer.models import Story, Topic


class TopicOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    name: str
    description: str


class StoryIn(BaseModel):
    """A story to add; one with the same URL (or ``guid``) is updated instead."""

    title: str = Field(min_length=1, max_length=500)
    url: AnyHttpUrl
    topic: str = Field(description="Topic slug, e.g. `syria`")
    summary: str = ""
    body_html: str = Field("", description="Sanitised (nh3) before it is stored")
    is_breaking: bool = False
    published_at: AwareDatetime | None = None
    guid: str | None = Field(None, max_length=500)
    image_url: AnyHttpUrl | None = None


class StoryOut(BaseModel):
    id: int
    guid: str
    url: str
    title: str
    summary: str
    topic: str
    is_breaking: bool
    published_at: datetime
    image_url: str | None


def story_out(story: Story) -> StoryOut:
    return StoryOut(
        id=story.id,
        guid=story.guid,
        url=story.url,
        title=story.title,
        summary=story.summary,
        topic=story.topic.slug,
        is_breaking=story.is_breaking,
        published_at=story.published_at,
        image_url=story.image_url,
    )


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["stories"])
    topics_check, stories_check = api.require(Area.TOPICS), api.require(Area.STORIES)
    Editor = Annotated[Principal, Depends(stories_check)]

    @router.get("/topics", dependencies=[Depends(topics_check)], summary="The newsroom's topics")
    def list_topics() -> list[TopicOut]:
        with api.session() as session:
            rows = session.scalars(select(Topic).order_by(Topic.position, Topic.id))
            return [TopicOut.model_validate(t) for t in rows]

    @router.get("/stories", summary="Latest stories, newest first")
    def list_stories(
        caller: Editor,
        limit: Limit = 50,
        before: Annotated[int | None, Query(description="Only stories older (by id)")] = None,
        topic: str | None = None,
    ) -> list[StoryOut]:
        with api.session() as session:
            query = select(Story).join(Topic).order_by(Story.id.desc()).limit(limit)
            if before is not None:
                query = query.where(Story.id < before)
            if topic:
                query = query.where(Topic.slug == topic)
            return [story_out(s) for s in session.scalars(query)]

    @router.get("/stories/{story_id}", summary="One story")
    def get_story(story_id: int, caller: Editor) -> StoryOut:
        with api.session() as session:
            story = session.get(Story, story_id)
            if story is None:
                raise not_found(f"story {story_id}")
            return story_out(story)

    @router.post(
        "/stories",
        status_code=status.HTTP_201_CREATED,
        summary="Add a story (201), or update the one with the same URL or guid (200)",
        responses={200: {"model": StoryOut, "description": "An existing story was updated"}},
    )
    def add_story(body: StoryIn, caller: Editor, response: Response) -> StoryOut:
        data = stories.StoryInput(
            title=body.title,
            url=str(body.url),
            topic=body.topic,
            summary=body.summary,
            body_html=body.body_html,
            is_breaking=body.is_breaking,
            published_at=body.published_at,
            guid=body.guid,
            image_url=str(body.image_url) if body.image_url else None,
        )
        with api.session() as session:
            try:
                story, created = stories.upsert_story(session, data)
            except ValueError as exc:
                raise unprocessable(str(exc)) from exc
            action = "story.create" if created else "story.update"
            audit.record(session, caller.actor, action, f"story:{story.id}", {"url": story.url})
            session.commit()
            if not created:
                response.status_code = status.HTTP_200_OK
            return story_out(story)

    return router
