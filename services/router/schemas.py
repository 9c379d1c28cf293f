"""Request bodies of the router API: validated at the edge, with field-level messages on 422."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from services.router.use_cases.agent_admin import AgentProfile
from shared.contact_uri import normalise_contact_uri
from shared.events import AgentStatus, AttemptResult, Channel, Outcome, Role, TimeWindow

SkillLevel = Annotated[int, Field(ge=1, le=5, description="Skill level 1 (basic) .. 5 (expert)")]
Capacity = Annotated[int, Field(ge=0, le=50, description="Concurrent contacts on this channel")]
ContactUri = Annotated[
    str,
    Field(max_length=300, description="client:<identity>, sip:user@host or an E.164 number"),
    AfterValidator(normalise_contact_uri),
]
ContactUris = Annotated[
    dict[Channel, ContactUri] | None,
    Field(description="How a connector reaches the agent per channel, e.g. {voice: 'client:alice'}"),
]
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentProfileIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    roles: list[Role] = Field(min_length=1, description="Roles the agent holds; the primary one first")
    primary_role: Role | None = Field(None, description="Default: the first of roles")
    skills: dict[Annotated[str, Field(min_length=1, max_length=60)], SkillLevel] = Field(default_factory=dict)
    languages: list[Annotated[str, Field(min_length=2, max_length=15)]] = Field(
        default_factory=lambda: ["en"], min_length=1
    )
    capacity: dict[Channel, Capacity] = Field(
        default_factory=lambda: {Channel.VOICE: 1}, description="e.g. {voice: 1} or {chat: 3}"
    )
    site: Identifier = "main"
    team: str | None = Field(None, max_length=100)
    # None on an update keeps the stored addresses (clients that predate them do not erase them).
    contact_uris: ContactUris = None

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: list[Role]) -> list[Role]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles must not repeat")
        return roles

    @field_validator("capacity")
    @classmethod
    def _some_capacity(cls, capacity: dict[Channel, int]) -> dict[Channel, int]:
        if not any(capacity.values()):
            raise ValueError("at least one channel needs a capacity above 0")
        return capacity

    @model_validator(mode="after")
    def _primary_is_held(self) -> AgentProfileIn:
        if self.primary_role is not None and self.primary_role not in self.roles:
            raise ValueError("primary_role must be one of roles")
        return self

    def profile(self) -> AgentProfile:
        primary = self.primary_role or self.roles[0]
        return AgentProfile(
            name=self.name,
            roles=[primary] + [r for r in self.roles if r is not primary],
            primary_role=primary,
            skills=dict(self.skills),
            languages=[lang.lower() for lang in self.languages],
            capacity=dict(self.capacity),
            site=self.site,
            team=self.team,
            contact_uris=dict(self.contact_uris) if self.contact_uris is not None else None,
        )


class ChosenStatus(StrEnum):
    """The statuses an agent chooses. What they are doing (offered, on a contact, wrap-up) is the router's
    view of their work, apart: ``activity`` on the agent."""

    AVAILABLE = AgentStatus.AVAILABLE.value
    BREAK = AgentStatus.BREAK.value
    OFFLINE = AgentStatus.OFFLINE.value

    def as_status(self) -> AgentStatus:
        return AgentStatus(self.value)


class AgentCreate(AgentProfileIn):
    agent_id: Identifier | None = Field(None, description="Your id for the agent; default: a new UUID")
    status: ChosenStatus = ChosenStatus.OFFLINE


class StatusChange(_Body):
    status: ChosenStatus = Field(
        description="Your own choice. What you are doing (offered, on a contact, wrap-up) is the router's "
        "view of your work: `activity` on the agent. Saying available in wrap-up ends the wrap-up."
    )
    reason: str | None = Field(None, max_length=200)


class DeclineIn(_Body):
    reason: str | None = Field(None, max_length=200)


class CompleteIn(_Body):
    resolved: bool = False
    sold: bool = False
    goodwill_amount: float = Field(0.0, ge=0, le=1_000_000)
    callback_promised: bool = False
    callback_window: TimeWindow | None = None
    notes: str | None = Field(None, max_length=4000, description="Wrap-up notes")
    attempt_result: AttemptResult | None = Field(
        None, description="Required when the assignment is a callback: how the attempt went"
    )

    @model_validator(mode="after")
    def _window(self) -> CompleteIn:
        if self.callback_window is not None:
            if not self.callback_promised:
                raise ValueError("callback_window is given but callback_promised is false")
            if self.callback_window.end <= self.callback_window.start:
                raise ValueError("callback_window.end must be after callback_window.start")
        return self

    def outcome(self) -> Outcome:
        return Outcome(
            resolved=self.resolved,
            sold=self.sold,
            goodwill_amount=self.goodwill_amount,
            callback_promised=self.callback_promised,
            callback_window=self.callback_window,
            notes=self.notes,
        )


class OwnershipOut(BaseModel):
    """Which routing state this instance owns: answered by owners and standbys alike."""

    instance: str = Field(description="this process's owner id in the lease")
    serving: bool = Field(description="owns the state, rebuilt it and consumes: serves /v1")
    mode: str = Field(
        description="whole: one active router per database; partitions: several, each owning the routing "
        "domains of its `contacts` partitions"
    )
    lease: str = Field(description="the lease guarding one database's whole routing state (mode whole)")
    lease_owner: str | None = Field(description="the instance holding that lease now (None: never taken)")
    lease_expires_at: datetime | None = Field(description="UTC; unless renewed, a standby takes over then")
    leases: list[str] = Field(description="the leases this instance holds (whole, or one per partition)")
    partitions: list[int] = Field(description="the `contacts` partitions it owns (mode partitions)")
    domains: list[str] = Field(
        description="routing domains this instance routes, of those it has seen; ['*']: every domain of its "
        "database (mode whole), []: none (a standby)"
    )
