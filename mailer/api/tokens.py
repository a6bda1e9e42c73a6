"""``/tokens`` (admins): API tokens. A secret is shown once, in the answer that creates it."""

# No ``from __future__ import annotations`` here: FastAPI must resolve the route-local
# ``Annotated`` aliases (Editor, Operator, Admin) as objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field

from mailer import audit, auth
from mailer.api.deps import Api, not_found
from mailer.auth import Area, Principal, Role
from mailer.models import ApiToken


class TokenIn(BaseModel):
    role: Role
    name: str = Field("", max_length=100, pattern=r"^[^\r\n\x00]*$")


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(TokenOut):
    secret: str = Field(description="Shown this once; only its hash is kept")


def token_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        role=token.role,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )


def routes(api: Api) -> APIRouter:
    router = APIRouter(tags=["tokens"], dependencies=[Depends(api.require(Area.TOKENS))])
    Admin = Annotated[Principal, Depends(api.require(Area.TOKENS))]

    @router.get("/tokens", summary="Every token (never their secrets)")
    def list_tokens() -> list[TokenOut]:
        with api.session() as session:
            return [token_out(t) for t in auth.list_tokens(session)]

    @router.post("/tokens", status_code=status.HTTP_201_CREATED, summary="Create a token")
    def create(body: TokenIn, caller: Admin) -> NewToken:
        with api.session() as session:
            token_id, secret = auth.create_token(session, body.role, body.name)
            details = {"role": body.role.value, "name": body.name}
            audit.record(session, caller.actor, "token.create", f"token:{token_id}", details)
            session.commit()
            token = session.get(ApiToken, token_id)
            assert token is not None
            return NewToken(**token_out(token).model_dump(), secret=secret)

    @router.delete(
        "/tokens/{token_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Revoke a token (at once, for every later request)",
        response_class=Response,
    )
    def revoke(token_id: int, caller: Admin) -> None:
        with api.session() as session:
            if not auth.revoke_token(session, token_id):
                raise not_found(f"live token {token_id}")
            audit.record(session, caller.actor, "token.revoke", f"token:{token_id}")
            session.commit()

    return router
