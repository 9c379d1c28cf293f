"""Matching rules of the pure engine, scenario by scenario."""

from __future__ import annotations

import math

import pytest
from routing_helpers import agent, contact, strategy

from services.router.matching import MatchingEngine
from services.router.strategy import load_strategy
from shared.events import AgentStatus, Channel, Intent, Role, Tier

SERVICE, SALES, BA = Role.SERVICE, Role.SALES, Role.BRAND_AMBASSADOR


@pytest.fixture
def engine() -> MatchingEngine:
    return MatchingEngine(load_strategy())


def assigned(decisions) -> dict[str, str]:
    return {d.contact_id: d.agent_id for d in decisions}


# -- who gets the contact -----------------------------------------------------------------------------


def test_best_skill_fit_wins_over_tie_break(engine):
    engine.upsert_agent(agent("junior", skills={"billing": 3}, idle_since=0))
    engine.upsert_agent(agent("expert", skills={"billing": 5}, idle_since=50))
    engine.upsert_agent(agent("none", idle_since=-100))  # no billing skill: not eligible at first
    engine.enqueue(contact("c", intent=Intent.BILLING))
    (d,) = engine.decide(now=1)
    assert d.agent_id == "expert"
    assert d.rule == "billing"
    assert d.explanation["agent_skills"] == {"billing": 5}
    assert d.explanation["required_skills"] == {"billing": 3}
    assert d.score == 5.5  # billing 5 + primary role


def test_closest_fit_keeps_experts_free():
    engine = MatchingEngine(strategy(skill_fit="closest"))
    engine.upsert_agent(agent("expert", skills={"billing": 5}, idle_since=-100))
    engine.upsert_agent(agent("enough", skills={"billing": 3}, idle_since=50))
    engine.enqueue(contact("c", intent=Intent.BILLING))
    (d,) = engine.decide(now=1)
    assert d.agent_id == "enough" and d.score == 3.5 and d.explanation["skill_fit"] == "closest"


def test_skill_levels_widen_after_waiting(engine):
    engine.upsert_agent(agent("novice", skills={"billing": 1}))
    engine.enqueue(contact("c", at=0, intent=Intent.BILLING))
    assert engine.decide(now=44) == []
    (d,) = engine.decide(now=45)
    assert d.agent_id == "novice" and d.explanation["step"] == 1


@pytest.mark.parametrize(
    ("tie_break", "expected"),
    [("longest_idle", "idle_long"), ("least_occupied", "empty"), ("round_robin", "idle_long")],
)
def test_tie_breaks(tie_break, expected):
    engine = MatchingEngine(strategy(tie_break=tie_break))
    chat = {Channel.CHAT: 3}
    engine.upsert_agent(agent("idle_long", capacity=chat, idle_since=0))
    engine.upsert_agent(agent("empty", capacity=chat, idle_since=10))
    # give idle_long one chat first so the occupancy differs
    engine.enqueue(contact("warm", channel=Channel.CHAT))
    assert assigned(engine.decide(now=1)) == {"warm": "idle_long"}  # everyone at 0 load: longest idle
    engine.enqueue(contact("c", at=2, channel=Channel.CHAT))
    (d,) = engine.decide(now=3)
    expected = {"longest_idle": "idle_long", "least_occupied": "empty", "round_robin": "empty"}[tie_break]
    assert d.agent_id == expected
    assert d.explanation["tie_break"] == tie_break


def test_round_robin_rotates():
    engine = MatchingEngine(strategy(tie_break="round_robin"))
    for name in "abc":
        engine.upsert_agent(agent(name, capacity={Channel.CHAT: 10}))
    got = []
    for i in range(6):
        engine.enqueue(contact(f"c{i}", at=i, channel=Channel.CHAT))
        got += [d.agent_id for d in engine.decide(now=i)]
    assert got == ["a", "b", "c", "a", "b", "c"]


def test_primary_role_preferred_over_secondary(engine):
    engine.upsert_agent(agent("seller", SALES, SERVICE, idle_since=0))
    engine.upsert_agent(agent("servant", SERVICE, idle_since=100))
    engine.enqueue(contact("c"))
    assert assigned(engine.decide(now=200)) == {"c": "servant"}


def test_language_site_and_role_are_respected(engine):
    engine.upsert_agent(agent("de", languages={"de"}))
    engine.upsert_agent(agent("other_site", site="berlin"))
    engine.upsert_agent(agent("seller", SALES))
    engine.enqueue(contact("c"))
    assert engine.decide(now=1) == []
    engine.upsert_agent(agent("en"))
    assert assigned(engine.decide(now=2)) == {"c": "en"}


def test_only_available_connected_agents(engine):
    engine.upsert_agent(agent("a", status=AgentStatus.BREAK))
    engine.enqueue(contact("c"))
    assert engine.decide(now=1) == []
    engine.set_status("a", AgentStatus.AVAILABLE, now=2)
    engine.set_connected("a", False, now=2)
    assert engine.decide(now=3) == []
    engine.set_connected("a", True, now=4)
    assert assigned(engine.decide(now=5)) == {"c": "a"}


def test_unknown_agents_are_ignored_by_presence_calls(engine):
    engine.set_status("ghost", AgentStatus.AVAILABLE, now=1)
    engine.set_connected("ghost", False, now=1)
    assert engine.agent("ghost") is None and engine.remove_agent("ghost") == []


@pytest.mark.parametrize("status", [AgentStatus.BUSY, AgentStatus.WRAP_UP, AgentStatus.OFFLINE])
def test_no_offers_in_other_statuses(engine, status):
    engine.upsert_agent(agent("a", status=status))
    engine.enqueue(contact("c"))
    assert engine.decide(now=1) == []


def test_capacity_per_channel(engine):
    engine.upsert_agent(agent("a", capacity={Channel.CHAT: 3}))
    for i in range(5):
        engine.enqueue(contact(f"c{i}", at=i, channel=Channel.CHAT))
    decisions = engine.decide(now=10)
    assert [d.contact_id for d in decisions] == ["c0", "c1", "c2"]
    assert engine.agent("a").load == {Channel.CHAT: 3}
    engine.finish("c1", now=11)
    assert assigned(engine.decide(now=12)) == {"c3": "a"}


def test_voice_is_exclusive(engine):
    engine.upsert_agent(agent("a", capacity={Channel.VOICE: 1, Channel.CHAT: 2}))
    engine.enqueue(contact("chat", at=0, channel=Channel.CHAT))
    engine.enqueue(contact("call", at=1, channel=Channel.VOICE))
    assert assigned(engine.decide(now=1.2)) == {"chat": "a"}  # chat ahead (aging); then it blocks voice
    assert engine.decide(now=2) == []
    engine.finish("chat", now=3)
    assert assigned(engine.decide(now=4)) == {"call": "a"}
    engine.enqueue(contact("chat2", at=5, channel=Channel.CHAT))
    assert engine.decide(now=6) == []  # on the phone: no chats
    engine.finish("call", now=7)
    assert assigned(engine.decide(now=8)) == {"chat2": "a"}


def test_decide_limit(engine):
    for name in "ab":
        engine.upsert_agent(agent(name))
    engine.enqueue(contact("c1", at=0))
    engine.enqueue(contact("c2", at=1))
    assert [d.contact_id for d in engine.decide(now=2, limit=1)] == ["c1"]
    assert [d.contact_id for d in engine.decide(now=2, limit=5)] == ["c2"]


# -- policies -----------------------------------------------------------------------------------------


def test_short_question_never_reaches_sales(engine):
    engine.upsert_agent(agent("seller", SALES))
    engine.enqueue(contact("q", intent=Intent.QUESTION))
    engine.enqueue(contact("quick", intent=Intent.SUPPORT, expected_handling_seconds=30))
    for now in (0, 60, 600, 6000):
        assert engine.decide(now=now) == []
    engine.upsert_agent(agent("helper", SERVICE))
    (d,) = engine.decide(now=6001, limit=1)
    assert d.agent_id == "helper"
    assert not d.explanation["upsell"] and d.explanation["short_question"]


def test_purchase_goes_to_sales_first(engine):
    engine.upsert_agent(agent("helper", SERVICE, idle_since=-1000))
    engine.upsert_agent(agent("seller", SALES))
    engine.enqueue(contact("buy", intent=Intent.PURCHASE))
    (d,) = engine.decide(now=1)
    assert d.agent_id == "seller" and d.explanation["upsell"] and d.explanation["role"] == "sales"


@pytest.mark.parametrize("kw", [{"intent": Intent.COMPLAINT}, {"intent": Intent.CANCELLATION}, {"tier": Tier.VIP}])
def test_unhappy_and_vip_go_to_brand_ambassadors(engine, kw):
    engine.upsert_agent(agent("helper", SERVICE, idle_since=-1000))
    engine.upsert_agent(agent("ambassador", BA))
    engine.enqueue(contact("c", **kw))
    (d,) = engine.decide(now=1)
    assert d.agent_id == "ambassador"
    assert d.explanation["goodwill_budget"] > 0
    assert d.explanation["allowed_handling_seconds"] > 420


def test_overflow_to_next_role_after_waiting(engine):
    engine.upsert_agent(agent("seller", SALES))
    engine.enqueue(contact("c", at=0))  # general: service, then sales after 60 s
    assert engine.decide(now=59) == []
    (d,) = engine.decide(now=60)
    assert d.agent_id == "seller" and d.explanation["step"] == 1


def test_each_step_opens_in_turn(engine):
    engine.upsert_agent(agent("ambassador", BA))
    engine.enqueue(contact("c", at=0))  # general: service, sales after 60 s, ambassadors after 180 s
    assert engine.decide(now=61) == []  # sales open, nobody there
    assert engine.decide(now=179) == []
    (d,) = engine.decide(now=180)
    assert d.agent_id == "ambassador" and d.explanation["step"] == 2


def test_earlier_step_preferred_when_both_open(engine):
    engine.upsert_agent(agent("seller", SALES, idle_since=-1000))
    engine.enqueue(contact("c", at=0))
    assert engine.decide(now=10) == []
    engine.upsert_agent(agent("helper", SERVICE, idle_since=500))
    assert assigned(engine.decide(now=100)) == {"c": "helper"}  # both open: service first


def test_widen_roles_opens_every_step_at_once(engine):
    engine.upsert_agent(agent("ambassador", BA))
    engine.enqueue(contact("cb", at=0, widen_roles=True, callback_id="k1"))
    assert assigned(engine.decide(now=1)) == {"cb": "ambassador"}


def test_sales_share_cap_holds_back_overflow_but_not_buyers():
    s = strategy(sales_share={"max_share": 0.5, "period_seconds": 3600, "min_sample": 0})
    engine = MatchingEngine(s)
    engine.upsert_agent(agent("seller", SALES, capacity={Channel.CHAT: 100}))
    engine.upsert_agent(agent("helper", SERVICE, capacity={Channel.CHAT: 1}))
    for i in range(6):
        engine.enqueue(contact(f"g{i}", at=0, channel=Channel.CHAT))  # general: sales after 60 s
    # g0 -> helper (service first); g1 -> seller (1 of 2 = 50 %); g2.. held back: 2 of 3 would break it
    assert assigned(engine.decide(now=200)) == {"g0": "helper", "g1": "seller"}
    engine.enqueue(contact("buy", at=201, channel=Channel.CHAT, intent=Intent.PURCHASE))
    assert assigned(engine.decide(now=202)) == {"buy": "seller"}  # exempt: the customer asked
    assert engine.sales.counts(202) == (2, 3)
    engine.finish("g0", now=203)
    engine.enqueue(contact("x", at=-100, channel=Channel.CHAT))
    assert assigned(engine.decide(now=210)) == {"x": "helper"}  # 2 of 4; g2 still held back
    assert engine.sales.share(210) <= 0.5
    # service work lowers the share: held-back overflow flows to sales again within the same decide
    engine.upsert_agent(agent("helper2", SERVICE, capacity={Channel.CHAT: 2}))
    engine.enqueue(contact("q1", at=215, channel=Channel.CHAT, intent=Intent.QUESTION))
    got = assigned(engine.decide(now=220))
    assert got == {"g2": "helper2", "g3": "helper2", "g4": "seller", "g5": "seller"}
    assert engine.sales.share(220) == pytest.approx(0.5)
    assert engine.is_waiting("q1")


@pytest.mark.parametrize("per", ["tenant", "site"])
def test_sales_share_cap_counts_the_tenant_or_each_site_as_the_strategy_says(per):
    """Berlin sends nothing to sales; Paris sends overflow. Per tenant, Berlin's service-only traffic
    lets Paris go above the cap (one share for all); per site, Paris is held to its own 50 %."""
    s = strategy(sales_share={"max_share": 0.5, "period_seconds": 3600, "min_sample": 0, "per": per})
    engine = MatchingEngine(s)
    engine.upsert_agent(agent("b-helper", SERVICE, site="berlin", capacity={Channel.CHAT: 10}))
    engine.upsert_agent(agent("p-seller", SALES, site="paris", capacity={Channel.CHAT: 10}))
    engine.upsert_agent(agent("p-helper", SERVICE, site="paris", capacity={Channel.CHAT: 1}))
    for i in range(6):
        engine.enqueue(contact(f"b{i}", at=0, channel=Channel.CHAT, site="berlin"))
    assert len(engine.decide(now=1)) == 6  # six Berlin contacts, none to sales
    for i in range(4):
        engine.enqueue(contact(f"p{i}", at=0, channel=Channel.CHAT, site="paris"))  # general: sales after 60 s
    got = assigned(engine.decide(now=200))
    to_sales = sorted(c for c, a in got.items() if a == "p-seller")
    if per == "tenant":  # (3 sales + 1) / (10 + 1) is still <= 50 %: all three overflow contacts go to sales
        assert len(to_sales) == 3 and engine.sales.counts(200) == (3, 10)
    else:  # Paris alone: helper takes one, seller one (1 of 2), the rest are held back
        assert len(to_sales) == 1 and engine.sales.counts(200, "paris") == (1, 2)
        assert engine.sales.share(200, "paris") == pytest.approx(0.5) and engine.sales.counts(200, "berlin") == (0, 6)
        assert sum(engine.is_waiting(f"p{i}") for i in range(4)) == 2


def test_the_sales_share_scope_can_change_on_reload_without_losing_the_period():
    engine = MatchingEngine(strategy(sales_share={"max_share": 0.5, "min_sample": 0}))
    engine.upsert_agent(agent("b-helper", SERVICE, site="berlin", capacity={Channel.CHAT: 10}))
    for i in range(4):
        engine.enqueue(contact(f"b{i}", at=0, channel=Channel.CHAT, site="berlin"))
    engine.decide(now=1)
    assert engine.sales.sales_allowed(2, "paris")  # per tenant: Berlin's four count, 1 of 5 is fine
    engine.replace_strategy(strategy(sales_share={"max_share": 0.5, "min_sample": 0, "per": "site"}))
    assert engine.sales.counts(2) == (0, 4) and engine.sales.counts(2, "berlin") == (0, 4)  # history kept
    assert not engine.sales.sales_allowed(2, "paris")  # per site: Paris alone, its first would be 1 of 1


# -- order in line --------------------------------------------------------------------------------


def test_priority_by_tier_and_intent(engine):
    engine.upsert_agent(agent("a"))
    engine.enqueue(contact("std", at=0))
    engine.enqueue(contact("premium", at=5, tier=Tier.PREMIUM))  # +10 points, 5 s later (1 point/s)
    assert assigned(engine.decide(now=6)) == {"premium": "a"}


def test_aging_lets_long_waiters_overtake(engine):
    engine.upsert_agent(agent("a", status=AgentStatus.BREAK))
    engine.enqueue(contact("std", at=0))
    engine.enqueue(contact("premium", at=11, tier=Tier.PREMIUM))  # 10 points less than 11 s of waiting
    engine.set_status("a", AgentStatus.AVAILABLE, now=20)
    assert assigned(engine.decide(now=20)) == {"std": "a"}


def test_fair_drain_freed_agent_takes_oldest_it_fits(engine):
    engine.upsert_agent(agent("a", languages={"en"}))
    engine.enqueue(contact("de_oldest", at=0, language="de"))
    engine.enqueue(contact("en_old", at=1))
    engine.enqueue(contact("en_new", at=2))
    engine.enqueue(contact("chat_oldest", at=-50, channel=Channel.CHAT))  # a has no chat capacity
    assert assigned(engine.decide(now=3)) == {"en_old": "a"}
    engine.finish("en_old", now=4)
    assert assigned(engine.decide(now=4)) == {"en_new": "a"}


def test_callback_keeps_its_original_place(engine):
    engine.upsert_agent(agent("a", status=AgentStatus.BREAK))
    engine.enqueue(contact("older", at=0))
    engine.enqueue(contact("callback", at=10, callback_id="cb1"))  # virtual start time 10
    engine.enqueue(contact("newer", at=20))
    order = [e.contact_id for e in engine.queue_snapshot(now=30)]
    assert order == ["older", "callback", "newer"]
    engine.set_status("a", AgentStatus.AVAILABLE, now=30)
    got = []
    for t in (30, 31, 32):
        got += [d.contact_id for d in engine.decide(now=t)]
        if got:
            engine.finish(got[-1], now=t)
    assert got == ["older", "callback", "newer"]


def test_queue_snapshot(engine):
    engine.enqueue(contact("a", at=0))
    engine.enqueue(contact("b", at=5, tier=Tier.VIP))
    snap = engine.queue_snapshot(now=10)
    assert [e.contact_id for e in snap] == ["b", "a"]
    assert snap[0].priority == pytest.approx(25 + 5)  # vip 25 + 5 s at 1 point/s
    assert snap[1].priority == pytest.approx(10) and snap[1].waited_seconds == 10
    assert snap[1].open_roles == [SERVICE]
    assert engine.queue_snapshot(now=70)[1].open_roles == [SERVICE, SALES]
    engine.enqueue(contact("c", at=1, channel=Channel.CHAT))
    assert [e.contact_id for e in engine.queue_snapshot(now=10, limit=2)] == ["b", "a"]
    assert [e.contact_id for e in engine.queue_snapshot(now=10, channel=Channel.CHAT)] == ["c"]
    assert engine.queue_snapshot(now=10, site="elsewhere") == []


# -- preferred agent (callback promised by that agent) ----------------------------------------------


def test_preferred_agent_first_while_available(engine):
    engine.upsert_agent(agent("other", idle_since=-1000))
    engine.upsert_agent(agent("promised", SALES, languages={"fr"}))  # they promised: role/lang not required
    engine.enqueue(contact("cb", preferred_agent_id="promised", callback_id="k"))
    (d,) = engine.decide(now=1)
    assert d.agent_id == "promised" and d.rule == "preferred_agent" and d.explanation["preferred_agent"]


def test_preferred_agent_busy_means_anyone(engine):
    engine.upsert_agent(agent("other"))
    engine.upsert_agent(agent("promised", status=AgentStatus.BUSY))
    engine.enqueue(contact("cb", preferred_agent_id="promised"))
    assert assigned(engine.decide(now=1)) == {"cb": "other"}


def test_preferred_agent_registered_later(engine):
    engine.enqueue(contact("cb", preferred_agent_id="late", intent=Intent.QUESTION))
    engine.upsert_agent(agent("late", SALES))
    assert assigned(engine.decide(now=1)) == {"cb": "late"}


# -- offers: release, finish, withdraw --------------------------------------------------------------


def test_release_requeues_in_original_place_and_skips_that_agent(engine):
    engine.upsert_agent(agent("a", idle_since=0))
    engine.upsert_agent(agent("b", idle_since=5))
    engine.enqueue(contact("first", at=0))
    engine.enqueue(contact("second", at=1))
    assert assigned(engine.decide(now=2)) == {"first": "a", "second": "b"}
    assert engine.release("first", now=3) == "a"
    assert engine.missed_offers("a") == 1
    assert engine.is_waiting("first")
    assert engine.decide(now=4) == []  # a is free but was just declined by... a: not re-offered
    engine.enqueue(contact("third", at=3))
    assert assigned(engine.decide(now=5)) == {"third": "a"}
    engine.finish("second", now=6)
    assert assigned(engine.decide(now=7)) == {"first": "b"}  # first keeps its place ahead of others
    engine.accept("first")
    assert engine.missed_offers("b") == 0


def test_declined_agent_gets_it_again_after_the_reoffer_window():
    engine = MatchingEngine(strategy(reoffer_after_seconds=30, reoffer_alone_after_seconds=30))
    engine.upsert_agent(agent("only"))
    engine.enqueue(contact("c", at=0))
    engine.decide(now=1)
    engine.release("c", now=2)
    assert engine.decide(now=31) == []
    assert assigned(engine.decide(now=32)) == {"c": "only"}


def test_the_only_agent_who_declined_is_asked_again_after_the_short_pause(engine):
    """Nobody else can take it: the customer waits 30 s (the default), not the full 300 s."""
    assert (engine.strategy.reoffer_after_seconds, engine.strategy.reoffer_alone_after_seconds) == (300, 30)
    engine.upsert_agent(agent("only"))
    engine.enqueue(contact("c", at=0))
    (first,) = engine.decide(now=1)
    assert first.explanation["asked_again"] is False
    engine.release("c", now=2, missed=False)
    assert engine.decide(now=31) == []
    (again,) = engine.decide(now=32)
    assert again.agent_id == "only" and again.explanation["asked_again"] is True


def test_a_decliner_is_asked_again_early_only_while_everyone_else_is_busy(engine):
    engine.upsert_agent(agent("a", idle_since=0))
    engine.upsert_agent(agent("b", idle_since=5))
    engine.enqueue(contact("c", at=0))
    engine.enqueue(contact("other", at=1))
    assert assigned(engine.decide(now=2)) == {"c": "a", "other": "b"}
    engine.release("c", now=3, missed=False)  # a declines; b is busy with "other"
    assert engine.decide(now=20) == []
    assert assigned(engine.decide(now=33)) == {"c": "a"}  # b still busy: a is asked again
    engine.release("c", now=34, missed=False)  # a declines again
    engine.finish("other", now=40)  # b is free: the contact goes to b, a is left alone
    assert assigned(engine.decide(now=70)) == {"c": "b"}


def test_a_free_colleague_takes_the_contact_before_any_decliner_is_asked_again(engine):
    engine.upsert_agent(agent("a", idle_since=0))
    engine.upsert_agent(agent("b", idle_since=5, status=AgentStatus.OFFLINE))
    engine.enqueue(contact("c", at=0))
    engine.decide(now=1)
    engine.release("c", now=2, missed=False)
    engine.upsert_agent(agent("b", idle_since=5))  # b logs in
    assert assigned(engine.decide(now=100)) == {"c": "b"}  # a's short pause is long over: b still first


def test_declines_handed_back_in_keep_the_agent_skipped(engine):
    """After a restart (or a contact re-queued with new terms) the engine is told who said no, and when."""
    engine.upsert_agent(agent("a", idle_since=0))
    engine.upsert_agent(agent("b", idle_since=5))
    engine.enqueue(contact("c", at=0), declined={"a": 10.0})
    engine.restore_reservation(contact("r", at=0), "b", now=10.0, declined={"a": 9.0})
    assert engine.declined_by("c") == {"a": 10.0} and engine.declined_by("r") == {"a": 9.0}
    assert engine.decide(now=20) == []  # a may not have c (b is busy with r, a's short pause runs)
    engine.release("r", now=21, missed=False)
    assert engine.declined_by("r") == {"a": 9.0, "b": 21.0}
    assert assigned(engine.decide(now=22)) == {"c": "b"}  # b is free: c goes to b, not to a
    assert engine.declined_by("unknown") == {}


def test_the_short_pause_may_not_exceed_the_full_one():
    with pytest.raises(ValueError, match="reoffer_alone_after_seconds"):
        strategy(reoffer_after_seconds=20, reoffer_alone_after_seconds=60)


def test_release_without_requeue_drops_the_contact(engine):
    engine.upsert_agent(agent("a"))
    engine.enqueue(contact("c"))
    engine.decide(now=1)
    assert engine.release("c", now=2, requeue=False) == "a"
    assert not engine.is_waiting("c") and engine.reserved_agent("c") is None
    assert engine.agent("a").load.get(Channel.VOICE, 0) == 0
    assert engine.release("c", now=3) is None


def test_finish_frees_and_marks_idle(engine):
    engine.upsert_agent(agent("a"))
    engine.enqueue(contact("c"))
    engine.decide(now=1)
    assert engine.finish("c", now=100) == "a"
    st = engine.agent("a")
    assert st.idle_since == 100 and st.load.get(Channel.VOICE, 0) == 0
    assert engine.finish("c", now=101) is None


def test_withdraw_waiting_and_reserved(engine):
    engine.upsert_agent(agent("a"))
    engine.enqueue(contact("c1", at=0))
    engine.enqueue(contact("c2", at=1))
    engine.decide(now=2)
    assert engine.withdraw("c2").contact_id == "c2"  # waiting
    assert engine.withdraw("c1").contact_id == "c1"  # reserved: the offer is cancelled
    assert engine.agent("a").load.get(Channel.VOICE, 0) == 0
    assert engine.withdraw("c1") is None
    assert engine.queue_snapshot(now=3) == []


def test_enqueue_is_idempotent(engine):
    engine.enqueue(contact("c", at=0))
    engine.enqueue(contact("c", at=50))
    snap = engine.queue_snapshot(now=60)
    assert len(snap) == 1 and snap[0].waited_seconds == 60


def test_remove_agent_puts_its_offers_back(engine):
    engine.upsert_agent(agent("a"))
    engine.enqueue(contact("c"))
    engine.decide(now=1)
    assert engine.remove_agent("a") == ["c"]
    assert engine.is_waiting("c")
    engine.upsert_agent(agent("b"))
    assert assigned(engine.decide(now=2)) == {"c": "b"}


def test_upsert_keeps_engine_load_and_applies_profile(engine):
    engine.upsert_agent(agent("a", capacity={Channel.CHAT: 2}))
    engine.enqueue(contact("c1", channel=Channel.CHAT))
    engine.decide(now=1)
    engine.upsert_agent(agent("a", capacity={Channel.CHAT: 1}, languages={"en", "de"}))
    assert engine.agent("a").load == {Channel.CHAT: 1}
    engine.enqueue(contact("c2", channel=Channel.CHAT, language="de"))
    assert engine.decide(now=2) == []  # now at capacity
    engine.upsert_agent(agent("a", capacity={Channel.CHAT: 2}, languages={"en", "de"}))
    assert assigned(engine.decide(now=3)) == {"c2": "a"}


def test_restore_reservation_after_restart(engine):
    engine.upsert_agent(agent("a"))
    engine.restore_reservation(contact("c"), "a", now=5)
    assert engine.reserved_agent("c") == "a"
    engine.enqueue(contact("d"))
    assert engine.decide(now=6) == []
    assert engine.finish("c", now=7) == "a"
    assert assigned(engine.decide(now=8)) == {"d": "a"}


def test_replace_strategy_keeps_line_and_reservations(engine):
    engine.upsert_agent(agent("a", capacity={Channel.CHAT: 1}, idle_since=0))
    engine.upsert_agent(agent("b", capacity={Channel.CHAT: 1}, idle_since=5))
    engine.upsert_agent(agent("c", capacity={Channel.CHAT: 1}, idle_since=9))
    engine.enqueue(contact("r", at=0, channel=Channel.CHAT))
    engine.decide(now=1)
    engine.set_status("b", AgentStatus.BREAK, now=1)
    engine.set_status("c", AgentStatus.BREAK, now=1)
    engine.enqueue(contact("w1", at=2, channel=Channel.CHAT))
    engine.enqueue(contact("w2", at=3, channel=Channel.CHAT))
    engine.replace_strategy(strategy(version="v2", tie_break="round_robin"))
    assert engine.strategy.version == "v2"
    assert engine.reserved_agent("r") == "a"
    assert [e.contact_id for e in engine.queue_snapshot(now=4)] == ["w1", "w2"]
    engine.set_status("b", AgentStatus.AVAILABLE, now=5)
    (d,) = engine.decide(now=5)
    assert d.contact_id == "w1" and d.explanation["strategy_version"] == "v2"
    assert engine.agent("a").load == {Channel.CHAT: 1}


# -- estimates --------------------------------------------------------------------------------------


def test_estimated_wait(engine):
    assert engine.estimated_wait("main", Channel.VOICE, now=0) == math.inf  # nobody staffed
    engine.upsert_agent(agent("a"))
    assert engine.estimated_wait("main", Channel.VOICE, now=0) == 0.0  # someone is free
    engine.enqueue(contact("c1"))
    engine.decide(now=1)
    engine.enqueue(contact("c2"))
    aht = load_strategy().channel_policy(Channel.VOICE).expected_handling_seconds
    assert engine.estimated_wait("main", Channel.VOICE, now=2) == pytest.approx(2 * aht)
    engine.finish("c1", now=61)  # measured handling time takes over
    engine.decide(now=61)
    engine.enqueue(contact("c3"))
    assert engine.estimated_wait("main", Channel.VOICE, now=62) == pytest.approx(2 * 60)
    engine.set_status("a", AgentStatus.BREAK, now=63)
    assert engine.estimated_wait("main", Channel.VOICE, now=63) == math.inf
