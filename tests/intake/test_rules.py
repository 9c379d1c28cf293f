"""Enrichment rules: pure functions, checked on examples and on invariants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.rules import EnrichmentRules, HandlingTimes, KeywordRule, enrich, timezone_for
from shared.business_hours import SiteCalendar
from shared.events import Channel, Intent

RULES = EnrichmentRules(
    ivr_intents={"1": Intent.SUPPORT, "2": Intent.PURCHASE, "2>1": Intent.QUESTION},
    keywords=(
        KeywordRule(intent=Intent.CANCELLATION, keywords=("cancel",)),
        KeywordRule(intent=Intent.COMPLAINT, keywords=("refund", "not working")),
    ),
    handling=HandlingTimes(
        default_seconds=100,
        by_intent={Intent.SUPPORT: 400},
        channel_factor={Channel.CHAT: 1.5},
        overrides={"support/email": 50},
    ),
)


def test_payload_intent_wins_over_ivr_and_keywords() -> None:
    assert RULES.classify(Intent.BILLING, ["1"], "cancel it") == (Intent.BILLING, "payload")


def test_ivr_longest_prefix_wins_then_shorter_prefixes() -> None:
    assert RULES.classify(None, ["2", "1"], None) == (Intent.QUESTION, "ivr")
    assert RULES.classify(None, ["2", "7"], None) == (Intent.PURCHASE, "ivr")
    assert RULES.classify(None, ["7"], None) == (None, "none")


def test_keywords_match_at_word_start_in_rule_order() -> None:
    assert RULES.classify(None, [], "I CANCELLED twice and want a refund") == (Intent.CANCELLATION, "keywords")
    assert RULES.classify(None, [], "the app is not working") == (Intent.COMPLAINT, "keywords")
    assert RULES.intent_from_text("uncancelable") is None  # not at a word start


def test_handling_time_override_then_intent_times_channel_factor_then_default() -> None:
    assert RULES.expected_handling_seconds(Intent.SUPPORT, Channel.EMAIL) == 50
    assert RULES.expected_handling_seconds(Intent.SUPPORT, Channel.CHAT) == 600
    assert RULES.expected_handling_seconds(Intent.SUPPORT, Channel.VOICE) == 400
    assert RULES.expected_handling_seconds(None, Channel.CHAT) == 150
    assert RULES.expected_handling_seconds(Intent.BILLING, Channel.VOICE) == 100


def test_bad_rules_are_refused_at_configuration_time() -> None:
    with pytest.raises(ValidationError):
        HandlingTimes(overrides={"support-voice": 10})
    with pytest.raises(ValidationError):
        HandlingTimes(overrides={"support/fax": 10})
    with pytest.raises(ValidationError):
        EnrichmentRules.model_validate({"ivr_intents": {"1": "teleportation"}})


@given(st.sampled_from([*Intent, None]), st.sampled_from(list(Channel)))
def test_every_intent_and_channel_has_a_positive_handling_time(intent: Intent | None, channel: Channel) -> None:
    assert EnrichmentRules().expected_handling_seconds(intent, channel) > 0


@given(st.lists(st.sampled_from(["0", "1", "2", "9", "*", "#"]), max_size=5), st.text(max_size=80))
def test_classification_never_fails_and_names_its_source(selections: list[str], text: str) -> None:
    intent, source = EnrichmentRules().classify(None, selections, text)
    assert (intent is None) == (source == "none")


def test_timezone_from_payload_else_from_an_unambiguous_phone_region() -> None:
    assert timezone_for("America/New_York", "+4930901820") == "America/New_York"
    assert timezone_for(None, "+4930901820") == "Europe/Berlin"
    assert timezone_for(None, "+12125551234") == "America/New_York"
    assert timezone_for(None, "+61412345678") is None  # Australian mobile: several zones, no guess
    assert timezone_for(None, None) is None


def test_enrich_gives_local_time_and_business_hours() -> None:
    site = SiteCalendar.from_config("main", {"timezone": "Europe/Berlin", "hours": {"wed": ["09:00-17:00"]}})
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # Wednesday 11:00 in Berlin
    e = enrich(
        RULES,
        now=now,
        channel=Channel.VOICE,
        intent=None,
        ivr_selections=["1"],
        summary=None,
        customer_timezone="Asia/Tokyo",
        phone_e164=None,
        site_hours=site,
    )
    assert e.intent is Intent.SUPPORT and e.intent_source == "ivr"
    assert e.customer_local_time is not None and e.customer_local_time.hour == 19
    assert e.within_business_hours is True
    late = enrich(
        RULES,
        now=now.replace(hour=17),
        channel=Channel.VOICE,
        intent=None,
        ivr_selections=[],
        summary=None,
        customer_timezone=None,
        phone_e164="+4930901820",
        site_hours=site,
    )
    assert late.within_business_hours is False
    assert late.customer_timezone == "Europe/Berlin" and late.customer_local_time.hour == 18
    unknown = enrich(
        RULES,
        now=now,
        channel=Channel.CHAT,
        intent=None,
        ivr_selections=[],
        summary=None,
        customer_timezone=None,
        phone_e164="+61412345678",
        site_hours=site,
    )
    assert unknown.customer_timezone is None  # not guessed into the contract...
    local = unknown.customer_local_time
    assert local is not None and local.utcoffset() == site.tz.utcoffset(now)  # ...the site's clock stands in


def test_callback_digit_is_the_last_selection() -> None:
    rules = EnrichmentRules(callback_digit="9")
    assert rules.wants_callback(["1", "9"])
    assert not rules.wants_callback(["9", "1"])
    assert not rules.wants_callback([])
    assert not EnrichmentRules(callback_digit=None).wants_callback(["9"])
