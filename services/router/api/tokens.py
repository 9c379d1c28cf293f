"""Token issuance beyond agents: the admin issues supervisors time-limited tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field

from services.router.api.deps import AdminDep
from shared.auth import authenticator_of

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class SupervisorTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$", description="who it is for")
    ttl_seconds: int = Field(12 * 3600, gt=0, description="lifetime; at most the configured maximum")


class SupervisorTokenOut(BaseModel):
    name: str
    scope: str = "supervisor"
    token: str
    token_id: str
    expires_at: datetime


@router.post(
    "/supervisor-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=SupervisorTokenOut,
    summary="Issue a supervisor token (admin)",
)
async def issue_supervisor_token(body: SupervisorTokenIn, request: Request, _: AdminDep) -> SupervisorTokenOut:
    """A signed token every service accepts with the ``supervisor`` scope until it expires. It is not
    stored anywhere: it cannot be revoked before its expiry except by changing the signing key, so keep
    the lifetime short (a shift)."""
    auth = authenticator_of(request)
    if body.ttl_seconds > auth.max_supervisor_ttl:
        raise HTTPException(422, f"ttl_seconds is at most {auth.max_supervisor_ttl}")
    issued = auth.issue_supervisor_token(body.name, body.ttl_seconds)
    assert issued.expires_at is not None
    return SupervisorTokenOut(
        name=body.name,
        token=issued.token,
        token_id=issued.token_id,
        expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
    )
