"""Who on duty could serve a contact, and the first reason that rules everybody out (eligibility.py)."""

from __future__ import annotations

from services.router.eligibility import eligibility
from services.router.matching import AgentState
from services.router.strategy import load_strategy
from shared.events import AgentStatus, Channel, Intent, Role
from tests.router.unit.test_routing_strategy import C


def agent(
    aid: str,
    roles: list[Role],
    *,
    site: str = "main",
    skills: dict[str, int] | None = None,
    languages: frozenset[str] = frozenset({"en"}),
    chat: int = 1,
) -> AgentState:
    return AgentState(aid, site, roles, skills or {}, set(languages), {Channel.CHAT: chat}, AgentStatus.AVAILABLE)


def reason(intent: Intent, agents: list[AgentState], language: str = "en", widen: bool = False) -> str | None:
    strategy = load_strategy()
    plan = strategy.plan(C(channel=Channel.CHAT, intent=intent))
    found = eligibility(
        site="main", channel=Channel.CHAT, language=language, plan=plan, widen_roles=widen, on_duty=agents
    )
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


def test_the_engines_cached_answers_always_equal_a_fresh_scan() -> None:
    """The engine keeps eligibility per class of contact until the roster changes; after any mix of
    status changes, presence, profile updates, arrivals and decisions, its answers (eligibility and the
    wait estimate) must equal a scan of the agents as they are now."""
    import math
    import random

    from services.router.matching import MatchingEngine, WaitingContact
    from shared.events import Tier

    rng = random.Random(7)
    strategy = load_strategy()
    engine = MatchingEngine(strategy)
    langs = [frozenset({"en"}), frozenset({"en", "tr"}), frozenset({"de"})]
    roles = [[Role.SERVICE], [Role.SALES], [Role.BRAND_AMBASSADOR, Role.SERVICE]]

    def random_agent(i: int) -> AgentState:
        skills = {"billing": rng.randint(1, 3)} if rng.random() < 0.6 else {}
        st = agent(f"a{i}", rng.choice(roles), skills=skills, languages=rng.choice(langs), chat=rng.randint(0, 2))
        st.connected = rng.random() < 0.8
        return st

    for i in range(12):
        engine.upsert_agent(random_agent(i))
    n = 0
    for step in range(400):
        op = rng.random()
        aid = f"a{rng.randrange(12)}"
        if op < 0.25:
            engine.set_status(aid, rng.choice(list(AgentStatus)), float(step))
        elif op < 0.4:
            engine.set_connected(aid, rng.random() < 0.7, float(step))
        elif op < 0.5:
            engine.upsert_agent(random_agent(int(aid[1:])))
        elif op < 0.8:
            n += 1
            engine.enqueue(
                WaitingContact(
                    f"c{n}",
                    "main",
                    Channel.CHAT,
                    rng.choice(list(Intent)),
                    rng.choice(list(Tier)),
                    rng.choice(["en", "tr", "de"]),
                    float(step),
                )
            )
        else:
            engine.decide(float(step))
        probe = WaitingContact(
            "probe",
            "main",
            Channel.CHAT,
            rng.choice(list(Intent)),
            Tier.STANDARD,
            rng.choice(["en", "tr", "de"]),
            float(step),
        )
        on_duty = [a.state for a in engine._agents.values() if a.staffed]
        fresh = eligibility(
            site="main",
            channel=Channel.CHAT,
            language=probe.language,
            plan=strategy.plan(probe),
            widen_roles=False,
            on_duty=on_duty,
        )
        cached = engine.eligibility(probe)
        assert (cached.reason, sorted(cached.agent_ids)) == (fresh.reason, sorted(fresh.agent_ids)), step
        # the wait estimate, computed the slow way
        if not fresh.servable:
            expected = math.inf
        else:
            chosen = [engine._agents[a] for a in fresh.agent_ids]
            waiting = engine._waiting_count.get(("main", Channel.CHAT), 0)
            available = sum(1 for a in chosen if Channel.CHAT in a.eligible)
            slots = sum(a.state.capacity.get(Channel.CHAT, 0) for a in chosen)
            policy = strategy.channel_policy(Channel.CHAT)
            aht = engine._aht.get(("main", Channel.CHAT)) or policy.expected_handling_seconds
            expected = 0.0 if waiting < available else (waiting - available + 1) * aht / slots
        assert engine.estimated_wait_for(probe, float(step)) == expected, step
