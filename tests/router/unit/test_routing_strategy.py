"""Strategy policies (the brief's rules as data) and validation of strategy files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.router.strategy import (
    DEFAULT_STRATEGY_PATH,
    GoodwillLedger,
    GoodwillPolicy,
    SalesShareCap,
    SalesShareTracker,
    Strategy,
    StrategyError,
    load_strategy,
    parse_strategy,
    parse_strategy_yaml,
)
from shared.events import Channel, Intent, Role, Tier

EXAMPLE = Path(DEFAULT_STRATEGY_PATH).with_name("strategy.example.yaml")


@dataclass
class C:
    channel: Channel = Channel.VOICE
    intent: Intent | None = None
    tier: Tier = Tier.STANDARD
    expected_handling_seconds: float | None = None
    required_skills: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def default() -> Strategy:
    return load_strategy()


def minimal(**overrides) -> dict:
    data = {"version": "t1", "rules": [{"name": "all", "steps": [{"role": "service"}]}]}
    data.update(overrides)
    return data


# -- shipped files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, DEFAULT_STRATEGY_PATH, EXAMPLE])
def test_shipped_strategies_load(path):
    s = load_strategy(path)
    assert s.version
    assert s.rules[-1].when.is_catch_all


def test_default_has_sensible_settings(default):
    assert default.offer_timeout_seconds == 15
    assert default.tie_break == "longest_idle"
    assert default.channel_policy(Channel.VOICE).service_level.share == 0.8
    assert default.channel_policy(Channel.VOICE).service_level.within_seconds == 20
    assert default.wrap_up_seconds(Channel.VOICE) > 0


# -- the brief's policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [DEFAULT_STRATEGY_PATH, EXAMPLE])
@pytest.mark.parametrize("tier", list(Tier))
@pytest.mark.parametrize("channel", list(Channel))
def test_question_never_goes_to_sales_first_nor_upsells(path, tier, channel):
    s = load_strategy(path)
    plan = s.plan(C(channel=channel, intent=Intent.QUESTION, tier=tier))
    assert plan.short_question
    assert plan.steps[0].role is not Role.SALES
    assert not plan.upsell


@pytest.mark.parametrize("intent", [None, Intent.SUPPORT, Intent.BILLING, Intent.OTHER])
def test_short_expected_duration_is_a_short_question(default, intent):
    plan = default.plan(C(intent=intent, expected_handling_seconds=60))
    assert plan.short_question and not plan.upsell
    assert plan.steps[0].role is Role.SERVICE
    long_plan = default.plan(C(intent=intent, expected_handling_seconds=600))
    assert not long_plan.short_question


def test_short_purchase_still_goes_to_sales(default):
    plan = default.plan(C(intent=Intent.PURCHASE, expected_handling_seconds=30))
    assert not plan.short_question
    assert plan.rule == "purchase" and plan.steps[0].role is Role.SALES and plan.upsell


def test_short_question_policy_is_enforced_even_against_a_sales_first_rule():
    s = parse_strategy(
        minimal(
            rules=[
                {
                    "name": "sell_everything",
                    "upsell": True,
                    "steps": [{"role": "sales"}, {"role": "brand_ambassador", "after_seconds": 30}],
                },
            ]
        )
    )
    plan = s.plan(C(intent=Intent.SUPPORT, expected_handling_seconds=30))
    assert plan.short_question and not plan.upsell
    assert [st.role for st in plan.steps] == [Role.BRAND_AMBASSADOR, Role.SALES]
    assert plan.steps[0].opens_after_seconds == 0
    assert plan.steps[1].opens_after_seconds >= s.short_question.sales_after_seconds
    only_sales = parse_strategy(minimal(rules=[{"name": "s", "steps": [{"role": "sales"}]}]))
    plan = only_sales.plan(C(intent=Intent.OTHER, expected_handling_seconds=10))
    assert plan.steps[0].role is Role.SERVICE
    # the same rule for a long contact is untouched
    plan = s.plan(C(intent=Intent.SUPPORT, expected_handling_seconds=900))
    assert plan.steps[0].role is Role.SALES and plan.upsell


def test_purchase_goes_to_sales_and_is_exempt_from_the_cap(default):
    plan = default.plan(C(intent=Intent.PURCHASE))
    assert plan.steps[0].role is Role.SALES
    assert plan.sales_cap_exempt and plan.upsell


@pytest.mark.parametrize(
    "contact",
    [
        C(intent=Intent.COMPLAINT),
        C(intent=Intent.CANCELLATION),
        C(tier=Tier.VIP),
        C(tier=Tier.VIP, intent=Intent.PURCHASE),
    ],
)
def test_unhappy_and_vip_go_to_brand_ambassadors_with_goodwill_and_time(default, contact):
    plan = default.plan(contact)
    assert plan.steps[0].role is Role.BRAND_AMBASSADOR
    service = default.plan(C(intent=Intent.SUPPORT))
    assert plan.goodwill_budget > 0 == service.goodwill_budget
    assert plan.allowed_handling_seconds > service.allowed_handling_seconds
    assert not plan.upsell


def test_rule_overrides_role_profile():
    s = load_strategy(EXAMPLE)
    assert s.plan(C(intent=Intent.CANCELLATION)).goodwill_budget == 150
    assert s.plan(C(intent=Intent.COMPLAINT)).goodwill_budget == 75


def test_expansion_steps_and_skill_relaxation(default):
    plan = default.plan(C(intent=Intent.BILLING))
    assert plan.steps[0].required_skills == (("billing", 3),)
    assert plan.steps[1].required_skills == (("billing", 1),)
    assert plan.steps[1].opens_after_seconds == 45
    assert [st.role for st in plan.open_steps(0)] == [Role.SERVICE]
    assert len(plan.open_steps(45)) == 2
    assert len(plan.open_steps(0, widen=True)) == len(plan.steps)


def test_contact_required_skills_merge_with_the_rule(default):
    plan = default.plan(C(intent=Intent.BILLING, required_skills={"billing": 5, "german": 2}))
    assert dict(plan.steps[0].required_skills) == {"billing": 5, "german": 2}
    assert dict(plan.steps[1].required_skills) == {"billing": 1, "german": 1}


def test_priorities_by_tier_and_intent(default):
    std = default.plan(C(intent=Intent.SUPPORT)).priority
    assert default.plan(C(intent=Intent.SUPPORT, tier=Tier.PREMIUM)).priority > std
    assert default.plan(C(intent=Intent.SUPPORT, tier=Tier.VIP)).priority > std
    question = default.plan(C(intent=Intent.QUESTION)).priority
    assert default.plan(C(intent=Intent.CANCELLATION)).priority > question


def test_aging_follows_the_service_level(default):
    voice = default.plan(C(channel=Channel.VOICE)).aging_per_second
    chat = default.plan(C(channel=Channel.CHAT)).aging_per_second
    assert voice == pytest.approx(20 / 20) and chat == pytest.approx(20 / 60)
    explicit = load_strategy(EXAMPLE).plan(C(channel=Channel.EMAIL)).aging_per_second
    assert explicit == 0.002


def test_rules_match_on_channel():
    s = load_strategy(EXAMPLE)
    assert s.plan(C(channel=Channel.EMAIL, intent=Intent.SUPPORT)).rule == "email_backlog"
    assert s.plan(C(channel=Channel.CHAT, intent=Intent.SUPPORT)).rule == "general"


# -- callback policy ----------------------------------------------------------------------------------


def test_callback_policy(default):
    limit = default.callback.max_estimated_wait_seconds
    assert default.should_offer_callback(0, within_business_hours=False)
    assert default.should_offer_callback(limit + 1, within_business_hours=True)
    assert not default.should_offer_callback(limit, within_business_hours=True)
    assert not default.should_offer_callback(float("inf"), True, channel=Channel.EMAIL)
    assert default.should_offer_callback(float("inf"), True, channel=Channel.VOICE)
    off = parse_strategy(minimal(callback={"enabled": False}))
    assert not off.should_offer_callback(10_000, within_business_hours=False)
    hours_only = parse_strategy(minimal(callback={"outside_business_hours": False}))
    assert not hours_only.should_offer_callback(0, within_business_hours=False)


# -- counters -----------------------------------------------------------------------------------------


def test_sales_share_tracker_caps_within_a_rolling_period():
    t = SalesShareTracker(SalesShareCap(max_share=0.25, period_seconds=100, min_sample=4))
    assert t.sales_allowed(0)  # below the minimum sample nothing is capped
    for i in range(3):
        t.record_offer(f"s{i}", Role.SALES, now=i)
    assert t.counts(3) == (3, 3)
    assert t.sales_allowed(3)  # 3 < min_sample
    t.record_offer("x", Role.SERVICE, now=3)
    assert not t.sales_allowed(4)  # (3+1)/(4+1) > 0.25
    for i in range(12):
        t.record_offer(f"v{i}", Role.SERVICE, now=4)
    assert t.counts(4) == (3, 16)
    assert t.sales_allowed(4)  # 4/17 <= 0.25
    assert t.share(4) == pytest.approx(3 / 16)
    # a contact counts once; re-offering to sales turns it into a sales contact
    t.record_offer("v0", Role.SERVICE, now=5)
    assert t.counts(5) == (3, 16)
    t.record_offer("v0", Role.SALES, now=5)
    assert t.counts(5)[0] == 4
    # the period rolls: the first sales offers expire
    assert t.counts(101)[0] == 2  # s0 and s1 (offered at 0 and 1) have left the period
    assert t.counts(102) == (1, 13)  # s2 and x too; v0 (sales at 5) and the 12 service contacts remain
    assert t.counts(200) == (0, 0)


def test_goodwill_ledger():
    ledger = GoodwillLedger(GoodwillPolicy(period_budget=100, period_seconds=10))
    plan = load_strategy().plan(C(intent=Intent.COMPLAINT))
    assert ledger.budget_for(plan.goodwill_budget, 0) == plan.goodwill_budget == 50
    ledger.record(70, now=1)
    assert ledger.remaining(2) == 30
    assert ledger.budget_for(plan.goodwill_budget, 2) == 30
    assert ledger.remaining(11) == 100
    unlimited = GoodwillLedger(GoodwillPolicy())
    unlimited.record(1e6, 0)
    assert unlimited.remaining(0) is None and unlimited.budget_for(plan.goodwill_budget, 0) == 50


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"rules": [{"name": "a", "steps": [{"role": "service"}]}]}, "version"),
        (minimal(tie_break="random"), "tie_break"),
        (minimal(offer_timeout_seconds=0), "offer_timeout_seconds"),
        (minimal(colour="blue"), "colour"),  # typos are not silently ignored
        (minimal(rules=[]), "rules"),
        (minimal(rules=[{"name": "a", "steps": [{"role": "janitor"}]}]), "rules.0.steps.0.role"),
        (minimal(rules=[{"name": "a", "steps": []}]), "rules.0.steps"),
        (
            minimal(rules=[{"name": "a", "required_skills": {"billing": 7}, "steps": [{"role": "service"}]}]),
            "outside 1..5",
        ),
        (minimal(rules=[{"name": "a", "steps": [{"role": "service", "after_seconds": 5}]}]), "open at after_seconds 0"),
        (
            minimal(
                rules=[
                    {
                        "name": "a",
                        "steps": [
                            {"role": "service"},
                            {"role": "sales", "after_seconds": 60},
                            {"role": "brand_ambassador", "after_seconds": 30},
                        ],
                    }
                ]
            ),
            "ascending",
        ),
        (minimal(rules=[{"name": "a", "when": {"intents": ["purchase"]}, "steps": [{"role": "sales"}]}]), "catch-all"),
        (
            minimal(
                rules=[
                    {"name": "a", "when": {"tiers": ["vip"]}, "steps": [{"role": "service"}]},
                    {"name": "a", "steps": [{"role": "service"}]},
                ]
            ),
            "repeated: a",
        ),
        (
            minimal(
                rules=[
                    {"name": "q", "when": {"intents": ["question"]}, "steps": [{"role": "sales"}]},
                    {"name": "all", "steps": [{"role": "service"}]},
                ]
            ),
            "never go to sales first",
        ),
        (
            minimal(
                rules=[
                    {"name": "q", "when": {"short": True}, "upsell": True, "steps": [{"role": "service"}]},
                    {"name": "all", "steps": [{"role": "service"}]},
                ]
            ),
            "upsell",
        ),
        (minimal(sales_share={"max_share": 1.5}), "sales_share.max_share"),
        (minimal(channels={"pigeon": {}}), "channels"),
        (minimal(rules=[{"name": "a", "when": {"intents": ["gossip"]}, "steps": [{"role": "service"}]}]), "intents"),
    ],
)
def test_invalid_strategies_are_rejected_with_the_location(data, fragment):
    with pytest.raises(StrategyError) as err:
        parse_strategy(data, "test.yaml")
    assert "invalid strategy test.yaml" in str(err.value)
    assert fragment in str(err.value)


def test_invalid_yaml_and_files(tmp_path):
    with pytest.raises(StrategyError, match="not valid YAML"):
        parse_strategy_yaml("version: [1, 2")
    with pytest.raises(StrategyError, match="mapping"):
        parse_strategy_yaml("- just\n- a list\n")
    with pytest.raises(StrategyError, match="cannot read"):
        load_strategy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nrules:\n  - name: a\n    steps: [{role: service, after_seconds: -1}]\n")
    with pytest.raises(StrategyError, match=r"rules\.0\.steps\.0\.after_seconds"):
        load_strategy(bad)
    good = tmp_path / "good.yaml"
    good.write_text("version: '7'\nrules:\n  - name: a\n    steps: [{role: service}]\n")
    assert load_strategy(good).version == "7"


def test_strategy_is_immutable(default):
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        default.tie_break = "round_robin"  # type: ignore[misc]
