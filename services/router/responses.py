"""Answers of the router API: the JSON a client gets, one model per shape (issue 19).

The read models (``views.py``) and the use cases build these documents as dicts; the routes declare the
models below as their ``response_model``, so the OpenAPI document says exactly what comes back and
FastAPI checks it on the way out. The models forbid extra fields: a view that grows a field nobody
declared fails its tests instead of the field vanishing from the answer. The same models type the agent
stream's payloads (``stream_events.py``), which carry the same shapes.

Times the views render as ISO 8601 text stay exactly as they were on the wire (``IsoDatetime``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from services.router.staffing import StaffingRow
from services.router.strategy import TieBreak
from shared.events import AgentActivity, AgentStatus, Role

IsoDatetime = Annotated[
    datetime,
    # ``datetime.isoformat()`` (``+00:00``), as the views always wrote it, not pydantic's ``Z``.
    PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Out(BaseModel):
    """An answer's shape: nothing undeclared gets through."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------
# Errors (documentation of what the routes raise; the bodies are FastAPI's ``{"detail": ...}``)
# --------------------------------------------------------------------------------------------------


class Problem(BaseModel):
    """401 (no valid token), 403 (the token may not do this), 404 (no such thing), 409 (the state does
    not allow it), 422 (invalid for the current state or strategy), 503 (a standby: another router owns
    the routing state)."""

    detail: str


class StrategyRejectedDetail(BaseModel):
    message: str = Field(description="the validation errors of the file")
    active_version: str = Field(description="the strategy that stays active")


class StrategyRejected(BaseModel):
    """422 on a reload: the file is invalid; the active strategy stays."""

    detail: StrategyRejectedDetail


COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, invalid, expired or replaced token"},
    403: {"model": Problem, "description": "the token's scope does not allow this"},
    503: {"model": Problem, "description": "this router is a standby; another instance owns the routing state"},
}


class FieldProblem(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422 from the body's validation: field-level messages (``loc``, ``msg``, ``type``)."""

    detail: list[FieldProblem]


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such agent"}}


def INVALID(description: str) -> dict[int | str, dict[str, Any]]:  # noqa: N802  (reads like the constants)
    """422 from the body's validation (a list) or from the router's own checks (a sentence)."""
    return {422: {"model": ValidationProblem | Problem, "description": description}}


def as_json(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """The same error answers for a route whose own media type is not JSON (a stream): FastAPI would
    declare a ``model`` under the route's media type, so name the schema under ``application/json``
    (``Problem`` is in components/schemas through the other routes)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code, answer in responses.items():
        schema = {"$ref": f"#/components/schemas/{answer['model'].__name__}"}
        out[code] = {"description": answer["description"], "content": {"application/json": {"schema": schema}}}
    return out


def errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """``errors(e404="no such offer", e409="...")``: per-route error answers with the ``Problem`` body."""
    return {int(code.removeprefix("e")): {"model": Problem, "description": text} for code, text in described.items()}


# --------------------------------------------------------------------------------------------------
# Agents
# --------------------------------------------------------------------------------------------------


class AgentOut(Out):
    agent_id: str
    name: str
    site: str
    team: str | None
    roles: list[Role] = Field(description="the primary role first")
    primary_role: Role
    skills: dict[str, int] = Field(description="skill → level 1..5")
    languages: list[str]
    capacity: dict[str, int] = Field(description="channel → concurrent contacts")
    contact_uris: dict[str, str] = Field(description="channel → how a connector reaches the agent")
    status: AgentStatus = Field(description="the agent's own choice")
    status_reason: str | None
    status_since: IsoDatetime
    activity: AgentActivity = Field(description="the router's view of the agent's work, apart from its status")
    activity_since: IsoDatetime | None
    wrap_up_until: IsoDatetime | None
    missed_offers: int
    load: dict[str, int] = Field(description="channel → contacts offered or assigned now")
    connected: bool = Field(description="a stream is open now")
    present: bool = Field(description="connected, or disconnected for less than the grace period")


class AgentRegistered(AgentOut):
    token: str = Field(description="the agent's bearer token; shown only here")


class AgentList(Out):
    items: list[AgentOut]
    count: int


class AgentToken(Out):
    agent_id: str
    token: str = Field(description="the new bearer token; the old one stops working")


# --------------------------------------------------------------------------------------------------
# Offers and assignments
# --------------------------------------------------------------------------------------------------


class OfferOut(Out):
    """An offer as stored: open or answered."""

    offer_id: str
    contact_id: str
    agent_id: str
    state: str = Field(description="pending, accepted, declined, timed_out, withdrawn")
    made_at: IsoDatetime
    expires_at: IsoDatetime
    resolved_at: IsoDatetime | None
    rule: str
    score: float
    explanation: dict[str, Any] = Field(description="why this agent: the matching's terms")
    reason: str | None


class ContactSummary(Out):
    contact_id: str
    site: str
    channel: str
    intent: str | None
    summary: str | None
    customer: dict[str, Any] = Field(description="who the customer is (id, name, tier...)")
    callback_id: str | None
    callback_attempt: int | None
    virtual_start: IsoDatetime = Field(description="the contact's place in line")


class OfferPlan(Out):
    """The agent's leeway on the contact, from the strategy's plan and the role it was offered under."""

    role: Role
    upsell: bool
    allowed_handling_seconds: float
    goodwill_budget: float
    short_question: bool


class AssignmentPlan(OfferPlan):
    rule: str


class OpenOffer(Out):
    """An open offer as the agent sees it: the contact and the plan."""

    offer_id: str
    contact_id: str
    agent_id: str
    expires_at: IsoDatetime
    rule: str
    score: float
    explanation: dict[str, Any]
    contact: ContactSummary
    plan: OfferPlan


class Assignment(Out):
    """A contact the agent is on, with its plan."""

    contact_id: str
    agent_id: str
    state: str
    answered_at: IsoDatetime | None
    contact: ContactSummary
    plan: AssignmentPlan


class OpenOfferList(Out):
    items: list[OpenOffer]
    count: int


class AssignmentList(Out):
    items: list[Assignment]
    count: int


# --------------------------------------------------------------------------------------------------
# Contacts
# --------------------------------------------------------------------------------------------------


class QueueItem(Out):
    contact_id: str
    site: str
    channel: str
    priority: float = Field(description="aged by waiting time, tier and intent")
    waited_seconds: float
    rule: str
    open_roles: list[Role]
    callback_id: str | None
    preferred_agent_id: str | None
    unservable_reason: str | None = Field(
        description="why nobody on duty can serve it (channel, language, role, skill, nobody_on_duty)"
    )


class QueueOut(Out):
    items: list[QueueItem]
    count: int
    total: int = Field(description="every waiting contact, all sites and channels")


class Completed(Out):
    contact_id: str
    state: str
    outcome: dict[str, Any] = Field(description="the outcome as given, with attempt_result for a callback")
    ended_at: IsoDatetime


class TimelineEntry(BaseModel):
    """One step; the rest of its fields depend on ``kind`` (rule, score, reason, waited_seconds...)."""

    model_config = ConfigDict(extra="allow")

    at: IsoDatetime
    kind: str
    agent_id: str | None


class Timeline(Out):
    contact_id: str
    state: str
    channel: str
    site: str
    agent_id: str | None
    callback_id: str | None
    events: list[TimelineEntry]


# --------------------------------------------------------------------------------------------------
# Strategy and statistics
# --------------------------------------------------------------------------------------------------


class StrategyOut(Out):
    version: str
    description: str | None
    source: str = Field(description="the file (its path for the admin, its name otherwise) or 'default'")
    tie_break: TieBreak
    offer_timeout_seconds: float
    max_missed_offers: int
    strategy: dict[str, Any] = Field(description="the whole strategy document")


class StrategyReloaded(StrategyOut):
    previous_version: str


class WaitingRow(Out):
    site: str
    channel: str
    waiting: int
    oldest_wait_seconds: float


class WaitingByRole(Out):
    channel: str
    role: Role = Field(description="the first role of the contacts' plan")
    waiting: int


class ServiceLevel(Out):
    target_share: float
    within_seconds: float
    share: float | None
    meets_target: bool | None
    answered_share: float | None
    answered_share_meets_target: bool | None
    with_abandoned_share: float | None
    with_abandoned_share_meets_target: bool | None
    answered: int
    answered_within: int
    abandoned: int
    abandoned_within: int
    abandonment_rate: float | None


class SiteShare(Out):
    share: float
    offered: int


class SalesShare(Out):
    share: float
    offered_to_sales: int
    offered: int
    cap: float
    min_sample: int = Field(description="below it the cap does not bind")
    period_seconds: float
    per: Literal["tenant", "site"] = Field(description="tenant: one share for all sites; site: each its own")
    by_site: dict[str, SiteShare]


class RoleGoodwill(Out):
    spent: float
    budget: float
    remaining: float | None


class Goodwill(Out):
    spent: float
    budget: float | None
    remaining: float | None
    period_seconds: float
    by_role: dict[str, RoleGoodwill]


class Unservable(Out):
    count: int
    by_reason: dict[str, int]


class SalesTargetProgress(Out):
    role: str | None
    team: str | None
    target: int
    actual: int
    met: bool
    period_seconds: float


class RoleCoverage(Out):
    role: Role
    traffic_share: float = Field(description="share of the contacts whose plan starts with this role")
    on_duty: int
    on_duty_share: float
    understaffed: bool = Field(description="more of the traffic is meant for it than its share of agents on duty")


class RuleCoverage(Out):
    rule: str
    first_role: Role
    first_offers: int
    first_offer_to_first_role_share: float | None
    first_role_on_duty: int


class StrategyCoverage(Out):
    roles: list[RoleCoverage]
    rules: list[RuleCoverage]
    warnings: list[str]


class Stats(Out):
    at: IsoDatetime
    strategy_version: str
    waiting: list[WaitingRow]
    waiting_total: int
    waiting_by_role: list[WaitingByRole]
    oldest_wait_seconds: float
    agents_by_status: dict[str, int]
    agents_by_activity: dict[str, int]
    offers_outstanding: int
    window_seconds: float
    service_level: dict[str, ServiceLevel] = Field(description="per channel, over the recent window")
    staffing: list[StaffingRow]
    sales_share: SalesShare
    goodwill: Goodwill
    unservable: Unservable = Field(description="waiting now that nobody on duty can serve")
    sales_targets: list[SalesTargetProgress]
    strategy_coverage: StrategyCoverage
    today: dict[str, float] = Field(description="today's counters")
    strategy_deviations_today: dict[str, float] = Field(description="what the strategy asked for and did not get today")
