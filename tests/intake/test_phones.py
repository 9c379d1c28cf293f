"""The E.164 short path (the fast path's, off by default) must answer exactly what ``phonenumbers.parse``
answers: same number, same error."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from services.intake.phones import normalise_e164
from services.intake.phones import parse_e164_fast as parse_e164

COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def outcome(parse: object, value: str) -> tuple[str, object]:
    """A parse result or the error it raised, in a form two parsers can be compared by."""
    try:
        return ("number", parse(value))  # type: ignore[operator]
    except phonenumbers.NumberParseException as exc:
        return ("error", exc.error_type)


def reference(value: str) -> object:
    return phonenumbers.parse(value, None)


def example_numbers() -> list[str]:
    """An example of every number type of every region and non-geographic code, in E.164."""
    out: set[str] = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                out.add(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            out.add(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    return sorted(out)


EXAMPLES = example_numbers()


def test_the_short_path_can_be_used_with_this_phonenumbers() -> None:
    """Else SWITCHBOARD_INTAKE_FAST_PATH=true cannot switch it on (and the tests below fail)."""
    from services.intake import phones

    assert phones.fast_path_available(), "phonenumbers dropped a helper the E.164 short path uses"


def test_every_regions_examples_parse_as_phonenumbers_parses_them() -> None:
    assert len(EXAMPLES) > 1000  # ~250 regions x their number types: the corpus is really there
    for value in EXAMPLES:
        assert outcome(parse_e164, value) == outcome(reference, value), value


def test_examples_with_a_national_prefix_or_digits_added_or_removed() -> None:
    """Where parse() strips national prefixes or refuses lengths: the cases a short path gets wrong."""
    rng = random.Random(7)
    checked = 0
    for value in EXAMPLES:
        number = phonenumbers.parse(value, None)
        cc = str(number.country_code)
        national = value[1 + len(cc) :]
        prefix = (
            phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
                number.country_code, phonenumbers.region_code_for_country_code(number.country_code)
            ).national_prefix
            or "0"
        )
        variants = [
            f"+{cc}{prefix}{national}",
            f"+{cc}{national[:-1]}",
            f"+{cc}{national}{rng.randrange(10)}",
            f"+{cc}0{national}",
            f"+{cc}{rng.randrange(10)}{national}",
        ]
        for variant in variants:
            assert outcome(parse_e164, variant) == outcome(reference, variant), variant
            checked += 1
    assert checked > 5000


@settings(max_examples=3000, deadline=None)
@given(
    code=st.sampled_from(COUNTRY_CODES),
    rest=st.text(alphabet="0123456789", min_size=0, max_size=18),
)
def test_random_digits_after_a_known_country_code(code: int, rest: str) -> None:
    value = f"+{code}{rest}"
    assert outcome(parse_e164, value) == outcome(reference, value)


@settings(max_examples=1000, deadline=None)
@given(value=st.text(alphabet="+0123456789 -()", min_size=0, max_size=24))
def test_any_short_string_of_phone_characters(value: str) -> None:
    assert outcome(parse_e164, value) == outcome(reference, value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+4930123456", "+4930123456"),
        ("+49 30 123456", "+4930123456"),  # formatted input still accepted and normalised
        ("tel:+49-30-123456", "+4930123456"),
        ("+390612345678", "+390612345678"),  # Italian leading zero kept
    ],
)
def test_normalise_accepts_and_normalises(value: str, expected: str) -> None:
    assert normalise_e164(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("+999123456789", "not a phone number in E.164 format"),  # no such country code
        ("030123456", "not a phone number in E.164 format"),  # national format: no country
        ("+491", "not a phone number in E.164 format"),
        ("+4912", "not a valid phone number"),
        ("+15555555555", "not a valid phone number"),  # right shape, not an assigned number
    ],
)
def test_normalise_refuses_with_a_reason(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_e164(value)
