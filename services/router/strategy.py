"""The routing strategy: the management's decision about who serves whom, as validated data.

A strategy is a versioned YAML document (see ``strategy.example.yaml``). It is pure: no clock, no I/O
beyond :func:`load_strategy`. The matching engine asks it for a :class:`RoutingPlan` per contact (which
roles in which order, when each opens, priority, upsell flag, handling time, goodwill budget) and feeds
the counters (:class:`SalesShareTracker`, :class:`GoodwillLedger`) so caps hold over a period.

Policies that are promises to customers are enforced in code, not left to the file: a short question
never goes to sales first and never carries an upsell flag, whatever the rules say.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.events import Channel, Intent, Role, Tier

DEFAULT_STRATEGY_PATH = Path(__file__).with_name("default_strategy.yaml")

TieBreak = Literal["longest_idle", "least_occupied", "round_robin"]
SkillFit = Literal["best", "closest"]


class StrategyError(ValueError):
    """A strategy file that cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def _check_skills(skills: dict[str, int]) -> dict[str, int]:
    for name, level in skills.items():
        if not name:
            raise ValueError("skill names must not be empty")
        if not 1 <= level <= 5:
            raise ValueError(f"skill {name!r}: level {level} is outside 1..5")
    return skills


class RoleStep(_Model):
    """One step of a rule: a role that becomes eligible once the contact has waited ``after_seconds``.

    ``min_skill_level`` widens the step by lowering skill requirements: every required level is capped
    at this value (e.g. 1 = anyone holding the skill at all).
    """

    role: Role
    after_seconds: float = Field(default=0.0, ge=0)
    min_skill_level: int | None = Field(default=None, ge=1, le=5)


class RuleMatch(_Model):
    """Which contacts a rule applies to. ``None`` means any; all given conditions must hold."""

    intents: list[Intent] | None = None
    channels: list[Channel] | None = None
    tiers: list[Tier] | None = None
    short: bool | None = None  # match only short questions (True) or only non-short ones (False)

    def matches(self, intent: Intent | None, channel: Channel, tier: Tier, short: bool) -> bool:
        if self.intents is not None and intent not in self.intents:
            return False
        if self.channels is not None and channel not in self.channels:
            return False
        if self.tiers is not None and tier not in self.tiers:
            return False
        return self.short is None or self.short == short

    @property
    def is_catch_all(self) -> bool:
        return self.intents is None and self.channels is None and self.tiers is None and self.short is None


class LeewayOverride(_Model):
    """What a rule grants one role beyond (or instead of) the role's defaults; unset keys keep them."""

    allowed_handling_seconds: float | None = Field(default=None, gt=0)
    goodwill_budget: float | None = Field(default=None, ge=0)
    upsell: bool | None = None  # never turns on an upsell the rule (or a short question) rules out


class RoutingRule(_Model):
    """Eligible roles in order of preference for the contacts matched by ``when``."""

    name: str = Field(min_length=1)
    description: str | None = None
    when: RuleMatch = Field(default_factory=RuleMatch)
    steps: list[RoleStep] = Field(min_length=1)
    required_skills: dict[str, int] = Field(default_factory=dict)
    priority: float = 0.0  # added to tier and intent priorities
    upsell: bool = False
    sales_cap_exempt: bool = False  # the customer asked for sales (purchase): the cap does not block
    # For the rule's first role only (default: that role's profile); other roles keep their own
    # leeway unless ``leeway`` grants them something for this rule (see leeway.py).
    allowed_handling_seconds: float | None = Field(default=None, gt=0)
    goodwill_budget: float | None = Field(default=None, ge=0)
    leeway: dict[Role, LeewayOverride] = Field(default_factory=dict)

    _skills = field_validator("required_skills")(_check_skills)

    @model_validator(mode="after")
    def _steps_are_ordered(self) -> RoutingRule:
        if self.steps[0].after_seconds != 0:
            raise ValueError(f"rule {self.name!r}: the first step must open at after_seconds 0")
        times = [s.after_seconds for s in self.steps]
        if times != sorted(times):
            raise ValueError(f"rule {self.name!r}: steps must be listed by after_seconds, ascending")
        return self


class RoleProfile(_Model):
    """What a role carries by default: how long a contact may take and the goodwill it may grant."""

    allowed_handling_seconds: float = Field(default=600.0, gt=0)
    goodwill_budget: float = Field(default=0.0, ge=0)
    # May an agent in this role carry an upsell flag (where the rule allows one)? Unset: every role
    # but brand ambassadors, who look after unhappy and VIP customers rather than sell.
    upsell: bool | None = None

    def may_upsell(self, role: Role) -> bool:
        return self.upsell if self.upsell is not None else role is not Role.BRAND_AMBASSADOR


class ServiceLevel(_Model):
    """E.g. 80 % of contacts answered within 20 s."""

    share: float = Field(default=0.8, gt=0, le=1)
    within_seconds: float = Field(default=20.0, gt=0)


class ChannelPolicy(_Model):
    service_level: ServiceLevel = Field(default_factory=ServiceLevel)
    # Priority points gained per second of waiting; the default makes one service-level interval worth
    # 20 points, so channels age in proportion to their promise.
    aging_per_second: float | None = Field(default=None, gt=0)
    wrap_up_seconds: float = Field(default=30.0, ge=0)
    expected_handling_seconds: float = Field(default=300.0, gt=0)  # until measured: estimated wait

    @property
    def aging_rate(self) -> float:
        if self.aging_per_second is not None:
            return self.aging_per_second
        return 20.0 / self.service_level.within_seconds


class Priorities(_Model):
    tier: dict[Tier, float] = Field(default_factory=dict)
    intent: dict[Intent, float] = Field(default_factory=dict)


class ShortQuestionPolicy(_Model):
    """A contact is a short question if its intent is ``question`` or its expected handling time is at
    most ``max_expected_handling_seconds`` (unless its intent is in ``exempt_intents``, e.g. a quick
    purchase still goes to sales). Short questions never go to sales first and carry no upsell flag."""

    max_expected_handling_seconds: float = Field(default=120.0, ge=0)
    exempt_intents: list[Intent] = Field(default_factory=lambda: [Intent.PURCHASE])
    # When a rule would send a short question to sales first, sales opens no earlier than this.
    sales_after_seconds: float = Field(default=60.0, ge=0)
    # A sale recorded on a short question anyway: "flag" accepts it and records a strategy deviation
    # (timeline, /v1/stats, metric); "refuse" answers 422 so the agent records it without the sale.
    sale_recorded: Literal["flag", "refuse"] = "flag"


class SalesShareCap(_Model):
    """At most ``max_share`` of the contacts offered in a rolling ``period_seconds`` go to sales."""

    max_share: float = Field(default=0.3, ge=0, le=1)
    period_seconds: float = Field(default=3600.0, gt=0)
    min_sample: int = Field(default=20, ge=0)  # below this many contacts in the period, no cap
    # Over what the share is counted. "tenant": every site this router serves together (one sales team,
    # one management decision). "site": each site on its own, so a site with little sales traffic
    # cannot let another go above max_share (sites with their own teams and their own targets).
    per: Literal["tenant", "site"] = "tenant"


class GoodwillPolicy(_Model):
    period_budget: float | None = Field(default=None, ge=0)  # total per period; None = unlimited
    period_seconds: float = Field(default=86400.0, gt=0)
    # Per role, within the total: what agents offered contacts under that role may grant together in a
    # period (a role not listed: only the total applies).
    role_budgets: dict[Role, float] = Field(default_factory=dict)

    @field_validator("role_budgets")
    @classmethod
    def _non_negative(cls, budgets: dict[Role, float]) -> dict[Role, float]:
        for role, amount in budgets.items():
            if amount < 0:
                raise ValueError(f"role_budgets.{role.value}: {amount} is negative")
        return budgets


class SalesTarget(_Model):
    """A realistic sales target decided by management: ``target`` sales per ``period_seconds`` for one
    role or one team (exactly one of them). Reported against actual sales; never used for routing."""

    role: Role | None = None
    team: str | None = Field(default=None, min_length=1)
    target: int = Field(ge=0)
    period_seconds: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _one_subject(self) -> SalesTarget:
        if (self.role is None) == (self.team is None):
            raise ValueError("a sales target names exactly one of 'role' or 'team'")
        return self


class CallbackPolicy(_Model):
    enabled: bool = True
    max_estimated_wait_seconds: float = Field(default=300.0, ge=0)
    outside_business_hours: bool = True
    channels: list[Channel] = Field(default_factory=lambda: [Channel.VOICE, Channel.WEB_CALLBACK])
    # Offer a callback at once when nobody on duty can serve the contact (language, skill, role,
    # channel) instead of letting it wait (flagged ``unservable``) for someone who can.
    when_unservable: bool = False


class BlendingPolicy(_Model):
    """Exclusive channels (voice): an agent on such a contact takes nothing else, and gets one only
    when idle on every channel."""

    exclusive_channels: list[Channel] = Field(default_factory=lambda: [Channel.VOICE])


# --------------------------------------------------------------------------------------------------
# Plans: what the strategy says about one contact
# --------------------------------------------------------------------------------------------------


class ContactLike(Protocol):
    # Read-only members: frozen dataclasses and pydantic models satisfy the protocol too.
    @property
    def channel(self) -> Channel: ...
    @property
    def intent(self) -> Intent | None: ...
    @property
    def tier(self) -> Tier: ...
    @property
    def expected_handling_seconds(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class PlanStep:
    role: Role
    opens_after_seconds: float
    required_skills: tuple[tuple[str, int], ...]  # sorted (name, min level)


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    rule: str
    steps: tuple[PlanStep, ...]
    priority: float  # base priority (tier + intent + rule), before aging and boosts
    aging_per_second: float
    upsell: bool
    allowed_handling_seconds: float
    goodwill_budget: float
    sales_cap_exempt: bool
    short_question: bool

    def open_steps(self, waited_seconds: float, widen: bool = False) -> tuple[PlanStep, ...]:
        if widen:
            return self.steps
        return tuple(s for s in self.steps if s.opens_after_seconds <= waited_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "steps": [
                {
                    "role": s.role.value,
                    "opens_after_seconds": s.opens_after_seconds,
                    "required_skills": dict(s.required_skills),
                }
                for s in self.steps
            ],
            "priority": self.priority,
            "upsell": self.upsell,
            "allowed_handling_seconds": self.allowed_handling_seconds,
            "goodwill_budget": self.goodwill_budget,
            "sales_cap_exempt": self.sales_cap_exempt,
            "short_question": self.short_question,
        }


# --------------------------------------------------------------------------------------------------
# The strategy
# --------------------------------------------------------------------------------------------------


def _default_roles() -> dict[Role, RoleProfile]:
    return {
        Role.SERVICE: RoleProfile(allowed_handling_seconds=420),
        Role.SALES: RoleProfile(allowed_handling_seconds=600),
        Role.BRAND_AMBASSADOR: RoleProfile(allowed_handling_seconds=900, goodwill_budget=50),
    }


class Strategy(_Model):
    """A complete, validated routing strategy. Rules are evaluated top-down; the first match wins."""

    version: str = Field(min_length=1)
    description: str | None = None
    rules: list[RoutingRule] = Field(min_length=1)
    roles: dict[Role, RoleProfile] = Field(default_factory=_default_roles)
    channels: dict[Channel, ChannelPolicy] = Field(default_factory=dict)
    priorities: Priorities = Field(default_factory=Priorities)
    short_question: ShortQuestionPolicy = Field(default_factory=ShortQuestionPolicy)
    sales_share: SalesShareCap = Field(default_factory=SalesShareCap)
    goodwill: GoodwillPolicy = Field(default_factory=GoodwillPolicy)
    sales_targets: list[SalesTarget] = Field(default_factory=list)
    callback: CallbackPolicy = Field(default_factory=CallbackPolicy)
    blending: BlendingPolicy = Field(default_factory=BlendingPolicy)
    skill_fit: SkillFit = "best"  # best: most skilled first; closest: least over-qualified first
    tie_break: TieBreak = "longest_idle"
    offer_timeout_seconds: float = Field(default=15.0, gt=0)
    max_missed_offers: int = Field(default=3, ge=1)  # consecutive misses -> the agent goes to break
    reoffer_after_seconds: float = Field(default=300.0, ge=0)  # a declining agent is skipped this long...
    # ...while someone else could take the contact. When nobody else can, the contact goes back to an agent
    # who declined or missed it after this much shorter pause: a caller does not wait on an idle agent.
    reoffer_alone_after_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Strategy:
        if self.reoffer_alone_after_seconds > self.reoffer_after_seconds:
            raise ValueError(
                f"reoffer_alone_after_seconds ({self.reoffer_alone_after_seconds:g}) must not exceed "
                f"reoffer_after_seconds ({self.reoffer_after_seconds:g}): it is the pause when nobody else can help"
            )
        subjects = [(t.role, t.team) for t in self.sales_targets]
        if len(set(subjects)) != len(subjects):
            raise ValueError("sales_targets: one target per role or team")
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        if not self.rules[-1].when.is_catch_all:
            raise ValueError(
                f"the last rule ({self.rules[-1].name!r}) must be a catch-all (empty 'when') so that "
                "every contact has a plan"
            )
        for rule in self.rules:
            if rule.when.intents is not None and Intent.QUESTION in rule.when.intents or rule.when.short:
                if rule.steps[0].role is Role.SALES:
                    raise ValueError(f"rule {rule.name!r}: short questions must never go to sales first")
                if rule.upsell:
                    raise ValueError(f"rule {rule.name!r}: short questions must not carry an upsell flag")
        return self

    # -- evaluation -------------------------------------------------------------------------------

    def channel_policy(self, channel: Channel) -> ChannelPolicy:
        return self.channels.get(channel) or ChannelPolicy()

    def wrap_up_seconds(self, channel: Channel) -> float:
        return self.channel_policy(channel).wrap_up_seconds

    def role_profile(self, role: Role) -> RoleProfile:
        return self.roles.get(role) or RoleProfile()

    def rule_named(self, name: str) -> RoutingRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def is_short_question(self, intent: Intent | None, expected_handling_seconds: float | None) -> bool:
        if intent is Intent.QUESTION:
            return True
        if expected_handling_seconds is None or intent in self.short_question.exempt_intents:
            return False
        return expected_handling_seconds <= self.short_question.max_expected_handling_seconds

    def rule_for(self, intent: Intent | None, channel: Channel, tier: Tier, short: bool) -> RoutingRule:
        for rule in self.rules:
            if rule.when.matches(intent, channel, tier, short):
                return rule
        return self.rules[-1]  # unreachable: the validator requires a catch-all last

    def plan(self, contact: ContactLike) -> RoutingPlan:
        """The routing plan for one contact; deterministic for equal inputs (the engine caches it)."""
        intent = contact.intent
        short = self.is_short_question(intent, contact.expected_handling_seconds)
        rule = self.rule_for(intent, contact.channel, contact.tier, short)
        extra: dict[str, int] = dict(getattr(contact, "required_skills", None) or {})
        required = dict(rule.required_skills)
        for name, level in extra.items():
            required[name] = max(level, required.get(name, 0))
        steps = [
            PlanStep(
                role=s.role,
                opens_after_seconds=s.after_seconds,
                required_skills=tuple(
                    sorted((n, min(lv, s.min_skill_level) if s.min_skill_level else lv) for n, lv in required.items())
                ),
            )
            for s in rule.steps
        ]
        if short and steps[0].role is Role.SALES:
            steps = _sales_not_first(steps, self.short_question.sales_after_seconds)
        first = self.role_profile(steps[0].role)
        priority = (
            self.priorities.tier.get(contact.tier, 0.0)
            + (self.priorities.intent.get(intent, 0.0) if intent is not None else 0.0)
            + rule.priority
        )
        return RoutingPlan(
            rule=rule.name,
            steps=tuple(steps),
            priority=priority,
            aging_per_second=self.channel_policy(contact.channel).aging_rate,
            upsell=rule.upsell and not short,
            allowed_handling_seconds=rule.allowed_handling_seconds or first.allowed_handling_seconds,
            goodwill_budget=(rule.goodwill_budget if rule.goodwill_budget is not None else first.goodwill_budget),
            sales_cap_exempt=rule.sales_cap_exempt,
            short_question=short,
        )

    def should_offer_callback(
        self, estimated_wait_seconds: float, within_business_hours: bool, channel: Channel | None = None
    ) -> bool:
        """Offer a same-day callback instead of queueing: outside business hours, or a long wait."""
        policy = self.callback
        if not policy.enabled or (channel is not None and channel not in policy.channels):
            return False
        if not within_business_hours and policy.outside_business_hours:
            return True
        return estimated_wait_seconds > policy.max_estimated_wait_seconds

    def callback_when_unservable(self, channel: Channel) -> bool:
        policy = self.callback
        return policy.enabled and policy.when_unservable and channel in policy.channels

    def new_sales_share(self) -> SalesShare:
        return SalesShare(self.sales_share)


def _sales_not_first(steps: list[PlanStep], sales_after: float) -> list[PlanStep]:
    """Reorder a plan that starts with sales so a non-sales role comes first (opening at 0) and every
    sales step opens no earlier than ``sales_after``; order among the rest is kept."""
    head = next((s for s in steps if s.role is not Role.SALES), None)
    rest = [s for s in steps if s is not head]
    if head is None:  # only sales listed: service takes the question first
        head = PlanStep(Role.SERVICE, 0.0, steps[0].required_skills)
    moved = [
        PlanStep(s.role, max(s.opens_after_seconds, sales_after), s.required_skills) if s.role is Role.SALES else s
        for s in rest
    ]
    moved.sort(key=lambda s: s.opens_after_seconds)  # stable: keeps preference order within a time
    return [PlanStep(head.role, 0.0, head.required_skills), *moved]


# --------------------------------------------------------------------------------------------------
# Counters the service feeds (pure; time passed in)
# --------------------------------------------------------------------------------------------------


@dataclass
class SalesShareTracker:
    """Rolling share of contacts offered to sales. Each contact counts once, at its first offer in the
    period; a contact first offered elsewhere and later to sales counts as a sales contact then."""

    cap: SalesShareCap
    _events: deque[tuple[float, str, bool]] = field(default_factory=deque)  # (at, contact, to_sales)
    _contacts: dict[str, bool] = field(default_factory=dict)  # contact -> counted as sales
    _sales: int = 0
    sold: int = 0  # completions with a sale in the period (informational)
    _sold_events: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        horizon = now - self.cap.period_seconds
        events = self._events
        while events and events[0][0] <= horizon:
            _, contact_id, to_sales = events.popleft()
            if to_sales:
                self._sales -= 1
                if self._contacts.get(contact_id):
                    del self._contacts[contact_id]
            elif self._contacts.get(contact_id) is False:
                del self._contacts[contact_id]
        while self._sold_events and self._sold_events[0] <= horizon:
            self._sold_events.popleft()
        self.sold = len(self._sold_events)

    def counts(self, now: float) -> tuple[int, int]:
        """(contacts offered to sales, contacts offered) in the period ending now."""
        self._expire(now)
        return self._sales, len(self._contacts)

    def share(self, now: float) -> float:
        sales, total = self.counts(now)
        return sales / total if total else 0.0

    def sales_allowed(self, now: float) -> bool:
        """May one more (non-exempt) contact be offered to sales without breaking the cap?"""
        sales, total = self.counts(now)
        if total < self.cap.min_sample:
            return True
        return (sales + 1) / (total + 1) <= self.cap.max_share

    def record_offer(self, contact_id: str, role: Role, now: float) -> None:
        self._expire(now)
        to_sales = role is Role.SALES
        known = self._contacts.get(contact_id)
        if known is None or (to_sales and known is False):
            self._contacts[contact_id] = to_sales
            self._events.append((now, contact_id, to_sales))
            if to_sales:
                self._sales += 1

    def record_completion(self, sold: bool, now: float) -> None:
        if sold:
            self._sold_events.append(now)
        self._expire(now)


@dataclass
class SalesShare:
    """The sales-share cap as the strategy scopes it (``sales_share.per``). Offers are kept per site, so
    the scope can change on a strategy reload without losing the period's history; per tenant the
    sites' counts are added up (contacts belong to one site: nobody is counted twice)."""

    cap: SalesShareCap
    _sites: dict[str, SalesShareTracker] = field(default_factory=dict)

    def set_cap(self, cap: SalesShareCap) -> None:
        self.cap = cap
        for tracker in self._sites.values():
            tracker.cap = cap

    def _site(self, site: str) -> SalesShareTracker:
        tracker = self._sites.get(site)
        if tracker is None:
            tracker = self._sites[site] = SalesShareTracker(self.cap)
        return tracker

    def counts(self, now: float, site: str | None = None) -> tuple[int, int]:
        """(contacts offered to sales, contacts offered) in the period: one site's, or all sites'."""
        if site is not None:
            tracker = self._sites.get(site)
            return tracker.counts(now) if tracker is not None else (0, 0)
        sales = total = 0
        for tracker in self._sites.values():
            s, t = tracker.counts(now)
            sales, total = sales + s, total + t
        return sales, total

    def share(self, now: float, site: str | None = None) -> float:
        sales, total = self.counts(now, site)
        return sales / total if total else 0.0

    def scope_of(self, site: str) -> str | None:
        """The site whose counts bind a contact of ``site``: itself per site, all sites (None) per tenant."""
        return site if self.cap.per == "site" else None

    def sales_allowed(self, now: float, site: str) -> bool:
        """May one more (non-exempt) contact of ``site`` be offered to sales without breaking the cap?"""
        sales, total = self.counts(now, self.scope_of(site))
        if total < self.cap.min_sample:
            return True
        return (sales + 1) / (total + 1) <= self.cap.max_share

    def any_sales_allowed(self, now: float) -> bool:
        """Could some site's contacts go to sales now (per tenant: the one shared answer)?"""
        if self.cap.per != "site":
            return self.sales_allowed(now, "")
        return not self._sites or any(self.sales_allowed(now, site) for site in self._sites)

    def record_offer(self, contact_id: str, role: Role, now: float, site: str) -> None:
        self._site(site).record_offer(contact_id, role, now)

    def record_completion(self, sold: bool, now: float, site: str) -> None:
        self._site(site).record_completion(sold, now)

    def sold(self, now: float, site: str | None = None) -> int:
        """Completions with a sale in the period."""
        trackers = [self._sites[site]] if site is not None and site in self._sites else []
        if site is None:
            trackers = list(self._sites.values())
        for tracker in trackers:
            tracker.counts(now)  # expires the period
        return sum(t.sold for t in trackers)

    def sites(self) -> list[str]:
        return sorted(self._sites)


@dataclass
class GoodwillLedger:
    """Goodwill granted in a rolling period against the strategy's period budget."""

    policy: GoodwillPolicy
    _grants: deque[tuple[float, float, Role | None]] = field(default_factory=deque)
    _spent: float = 0.0
    _by_role: dict[Role, float] = field(default_factory=dict)

    def spent(self, now: float) -> float:
        horizon = now - self.policy.period_seconds
        while self._grants and self._grants[0][0] <= horizon:
            _, amount, role = self._grants.popleft()
            self._spent -= amount
            if role is not None:
                self._by_role[role] = self._by_role.get(role, 0.0) - amount
        return max(self._spent, 0.0)

    def spent_by(self, role: Role, now: float) -> float:
        self.spent(now)
        return max(self._by_role.get(role, 0.0), 0.0)

    def remaining(self, now: float, role: Role | None = None) -> float | None:
        """What the period has left overall, and for ``role`` if the strategy budgets it (the smaller)."""
        left: float | None = None
        if self.policy.period_budget is not None:
            left = max(self.policy.period_budget - self.spent(now), 0.0)
        role_budget = self.policy.role_budgets.get(role) if role is not None else None
        if role_budget is not None:
            role_left = max(role_budget - self.spent_by(role, now), 0.0)  # type: ignore[arg-type]
            left = role_left if left is None else min(left, role_left)
        return left

    def record(self, amount: float, now: float, role: Role | None = None) -> None:
        if amount > 0:
            self.spent(now)
            self._grants.append((now, amount, role))
            self._spent += amount
            if role is not None:
                self._by_role[role] = self._by_role.get(role, 0.0) + amount

    def budget_for(self, budget: float, now: float, role: Role | None = None) -> float:
        """The goodwill an agent may grant on a contact: its own budget, within what the period has left
        (overall and for the role it was offered the contact under)."""
        left = self.remaining(now, role)
        return budget if left is None else min(budget, left)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid strategy {source}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {where}: {err['msg']}")
    return "\n".join(lines)


def parse_strategy(data: Any, source: str = "<data>") -> Strategy:
    if not isinstance(data, dict):
        raise StrategyError(f"invalid strategy {source}: expected a mapping at the top level")
    try:
        return Strategy.model_validate(data)
    except ValidationError as exc:
        raise StrategyError(_format_errors(exc, source)) from exc


def parse_strategy_yaml(text: str, source: str = "<yaml>") -> Strategy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StrategyError(f"invalid strategy {source}: not valid YAML: {exc}") from exc
    return parse_strategy(data, source)


def load_strategy(path: Path | None = None) -> Strategy:
    """Load and validate a strategy file; None loads the shipped default. Raises StrategyError."""
    path = Path(path) if path is not None else DEFAULT_STRATEGY_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StrategyError(f"cannot read strategy {path}: {exc}") from exc
    return parse_strategy_yaml(text, str(path))
