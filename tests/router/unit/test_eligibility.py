"""Who on duty could serve a contact, and the first reason that rules everybody out (eligibility.py)."""

from __future__ import annotations

from services.router.eligibility import eligibility
from services.router.matching import AgentState
from services.router.strategy import load_strategy
from shared.events import AgentStatus, Channel, Intent, Role
from tests.router.unit.test_routing_strategy import C


def agent(aid: str, roles: list[Role], *, site: str = "main", skills: dict[str, int] | None = None,
          languages: frozenset[str] = frozenset({"en"}), chat: int = 1) -> AgentState:
    return AgentState(aid, site, roles, skills or {}, set(languages), {Channel.CHAT: chat}, AgentStatus.AVAILABLE)


def reason(intent: Intent, agents: list[AgentState], language: str = "en", widen: bool = False) -> str | None:
    strategy = load_strategy()
    plan = strategy.plan(C(channel=Channel.CHAT, intent=intent))
    found = eligibility(site="main", channel=Channel.CHAT, language=language, plan=plan, widen_roles=widen,
                        on_duty=agents)
    return found.reason


def test_reasons_in_order() -> None:
    assert reason(Intent.SUPPORT, []) == "nobody_on_duty"
    assert reason(Intent.SUPPORT, [agent("a", [Role.SERVICE], site="berlin")]) == "nobody_on_duty"
    assert reason(Intent.SUPPORT, [agent("a", [Role.SERVICE], chat=0)]) == "channel"
    assert reason(Intent.SUPPORT, [agent("a", [Role.SERVICE])], language="tr") == "language"
    # billing needs the billing skill (widened to level 1, still held by nobody here)
    assert reason(Intent.BILLING, [agent("a", [Role.SERVICE])]) == "skill"
    assert reason(Intent.BILLING, [agent("a", [Role.SERVICE], skills={"billing": 1})]) is None
    # a purchase goes to sales, then service: a service agent can serve it eventually
    assert reason(Intent.PURCHASE, [agent("a", [Role.SERVICE])]) is None
    assert reason(Intent.COMPLAINT, [agent("a", [Role.SALES])]) == "role"
    assert reason(Intent.COMPLAINT, [agent("a", [Role.SALES])], widen=True) is None
