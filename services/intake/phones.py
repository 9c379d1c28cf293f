"""Phone numbers: E.164 in, E.164 out, validated by ``phonenumbers`` (Google's libphonenumber rules).

``phonenumbers.parse`` is built for free text: before it looks at a number it searches the input for
RFC 3966 ``phone-context``, punctuation, letters, an extension and an international dialling prefix.
Telephony systems send strict E.164 (``+`` and digits), where none of that can match, and parsing was
the largest single cost of accepting a contact (~12 us of a ~20 us validation). :func:`parse_e164_fast`
takes the rest of ``parse``'s steps for such input, in ``parse``'s order and with ``parse``'s own
helpers; anything else (spaces, dashes, ``tel:`` URIs, unknown country codes, odd lengths) goes to
``parse`` itself. ``tests/intake/test_phones.py`` checks that both give equal results, for an example
number of every region and number type and for random digit strings.

That short path calls private helpers of ``phonenumbers`` (``phonenumberutil._extract_country_code`` and
four more), which a release may change without notice. It is therefore off by default: intake parses
with ``phonenumbers.parse`` (public API) unless ``SWITCHBOARD_INTAKE_FAST_PATH=true`` switches it on
(:func:`use_fast_path`, process-wide). What it buys and costs: ``docs/decisions/0001-intake-fast-path.md``.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber, PhoneNumberFormat
from phonenumbers import phonenumberutil as _util

# phonenumbers compiles its metadata patterns through ``re``'s 512-entry cache: numbers from many
# countries thrash it (recompiling), and even hits cost a lookup per pattern. Keep them all compiled.
phonenumbers.enable_pattern_cache()

# '+', a country code (never starting with 0) and the national number: 6 to 17 digits in all, so that
# every length check parse() makes before the country code is already passed.
_STRICT = re.compile(r"\+[1-9][0-9]{5,16}")
_KEEP_ORIGINAL = frozenset(
    {
        phonenumbers.ValidationResult.TOO_SHORT,
        phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        phonenumbers.ValidationResult.INVALID_LENGTH,
    }
)
# The private helpers of phonenumbers the short path calls. Should a release drop one, the fast path
# cannot be switched on (every number takes parse(): slower, never wrong).
PRIVATE_HELPERS = (
    "_extract_country_code",
    "_maybe_strip_national_prefix_carrier_code",
    "_test_number_length",
    "_set_italian_leading_zeros_for_phone_number",
    "_MIN_LENGTH_FOR_NSN",
    "_MAX_LENGTH_FOR_NSN",
)
_fast_path = False  # the default: phonenumbers' public API only


def fast_path_available() -> bool:
    """Whether this phonenumbers release still has every private helper the short path calls."""
    return all(hasattr(_util, name) for name in PRIVATE_HELPERS)


def use_fast_path(enabled: bool) -> bool:
    """Parse strict E.164 through the private short path (``True``) or ``phonenumbers.parse`` only
    (``False``, the default), for the whole process; returns whether the short path is now in use."""
    global _fast_path
    _fast_path = enabled and fast_path_available()
    return _fast_path


def fast_path_in_use() -> bool:
    return _fast_path


def parse_e164(value: str) -> PhoneNumber:
    """``phonenumbers.parse(value, None)``, through the short path when it is switched on."""
    if _fast_path:
        return parse_e164_fast(value)
    return phonenumbers.parse(value, None)


def parse_e164_fast(value: str) -> PhoneNumber:
    """``phonenumbers.parse(value, None)``: same result, same exceptions, cheaper for strict E.164.

    Uses private helpers of phonenumbers: call it only where :func:`fast_path_available` said yes."""
    if _STRICT.fullmatch(value) is None:
        return phonenumbers.parse(value, None)
    country_code, national = _util._extract_country_code(value[1:])
    if country_code == 0:
        return phonenumbers.parse(value, None)  # raises: no such country code
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, _util.region_code_for_country_code(country_code)
    )
    if metadata is None or not _util._MIN_LENGTH_FOR_NSN <= len(national) <= _util._MAX_LENGTH_FOR_NSN:
        return phonenumbers.parse(value, None)  # parse decides (and raises) for the odd cases
    # As parse(): strip a national prefix only if what remains still has a possible length.
    _, stripped, _ = _util._maybe_strip_national_prefix_carrier_code(national, metadata)
    if _util._test_number_length(stripped, metadata) not in _KEEP_ORIGINAL:
        national = stripped
    if len(national) < _util._MIN_LENGTH_FOR_NSN:
        return phonenumbers.parse(value, None)
    number = PhoneNumber(country_code=country_code)
    _util._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


def normalise_e164(value: str) -> str:
    """The number in E.164 if it is a valid number, else ``ValueError`` with a message for the sender."""
    try:
        number = parse_e164(value)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number in E.164 format (+<country><number>): {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
