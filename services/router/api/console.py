"""The agent console: a static page for working a shift, and the one call it needs beyond the agent API.

``GET /agent`` is a plain HTML+JS file (no build, no CDN, nothing secret: no token needed to load it).
Everything else it does goes through the existing agent API with the agent's own token: its stream
(read with ``fetch`` so the token stays out of URLs), status, offers, completion. ``GET /v1/console/me``
tells a token's owner who they are and the goals that apply to them, so the page needs no agent id typed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.router.api.dashboard import STATIC
from services.router.api.deps import PrincipalDep, ServiceDep
from services.router.console import ConsoleProfile, console_profile, shift_figures
from services.router.responses import COMMON_ERRORS, Problem
from shared.auth import forbidden

router = APIRouter(tags=["agent console"])

CSP = (
    "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


@router.get("/agent", response_class=HTMLResponse, summary="The agent console page (static; asks for a token)")
async def console_page() -> HTMLResponse:
    return HTMLResponse(
        (STATIC / "agent.html").read_text(encoding="utf-8"),
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/v1/console/me",
    response_model=ConsoleProfile,
    summary="The calling agent, its role's leeway, the strategy's goals in plain words, and its own and its team's "
    "figures this shift against the goals (agent token)",
    responses={
        **COMMON_ERRORS,
        403: {"model": Problem, "description": "not an agent token (supervisors and the admin have no console)"},
    },
)
async def me(request: Request, service: ServiceDep, who: PrincipalDep) -> ConsoleProfile:
    if who.agent_id is None:
        raise forbidden("the agent console needs an agent's token; supervisors use /ops/dashboard")
    agent = await service.views.get_agent(who.agent_id)
    profile = console_profile(service.strategy, agent)
    profile.figures = await shift_figures(service, agent)
    return profile
