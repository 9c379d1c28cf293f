"""Signature algorithms: generic HMAC-SHA256 with a replay window, and Twilio's, checked against the
official ``twilio`` package's RequestValidator (the reference implementation)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from services.intake.signatures import (
    SignatureFailure,
    sign_generic,
    twilio_signature,
    verify_generic,
    verify_twilio,
)

SECRET = b"top-secret"
NOW = 1_790_000_000


def _verify(body: bytes, ts: str | None, sig: str | None, now: float = NOW) -> SignatureFailure | None:
    return verify_generic(SECRET, body=body, timestamp_header=ts, signature_header=sig, now=now, tolerance_seconds=300)


def test_generic_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET, b"1790000000." + body, hashlib.sha256).hexdigest()
    assert sign_generic(SECRET, NOW, body) == f"v1={expected}"
    assert _verify(body, str(NOW), f"v1={expected}") is None


def test_generic_signature_failures() -> None:
    body = b'{"a":1}'
    good = sign_generic(SECRET, NOW, body)
    assert _verify(body, None, good) is SignatureFailure.MISSING
    assert _verify(body, str(NOW), None) is SignatureFailure.MISSING
    assert _verify(body, "yesterday", good) is SignatureFailure.MALFORMED
    assert _verify(body, str(NOW), "sha256=abc") is SignatureFailure.MALFORMED
    assert _verify(body + b" ", str(NOW), good) is SignatureFailure.MISMATCH
    assert _verify(body, str(NOW + 1), good) is SignatureFailure.MISMATCH  # timestamp is inside the MAC
    assert (
        verify_generic(
            b"other", body=body, timestamp_header=str(NOW), signature_header=good, now=NOW, tolerance_seconds=300
        )
        is SignatureFailure.MISMATCH
    )


def test_replay_outside_the_tolerance_window_is_refused_both_directions() -> None:
    body = b"{}"
    good = sign_generic(SECRET, NOW, body)
    assert _verify(body, str(NOW), good, now=NOW + 300) is None
    assert _verify(body, str(NOW), good, now=NOW + 301) is SignatureFailure.EXPIRED
    assert _verify(body, str(NOW), good, now=NOW - 301) is SignatureFailure.EXPIRED


def test_rotation_accepts_any_listed_v1_signature() -> None:
    body = b"{}"
    old = sign_generic(b"old-secret", NOW, body)
    new = sign_generic(SECRET, NOW, body)
    assert _verify(body, str(NOW), f"{old}, {new}") is None


params_strategy = st.lists(
    st.tuples(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12),
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
    ),
    max_size=8,
)


@settings(max_examples=200)
@given(params_strategy, st.sampled_from(["HMAC_SHA1", "HMAC_SHA256"]))
def test_twilio_signature_matches_the_official_validator(params: list[tuple[str, str]], algorithm: str) -> None:
    url = "https://cc.example.com/v1/webhooks/twilio/voice?ivr=menu"
    # The official validator takes a dict (one value per name): compare on that shape.
    as_dict = dict(params)
    official = RequestValidator("auth-token").compute_signature(url, as_dict, algorithm)
    assert twilio_signature(b"auth-token", url, list(as_dict.items()), algorithm=algorithm) == official


def test_twilio_multi_valued_params_sorted_like_the_official_validator() -> None:
    class MultiDict(dict):  # the shape Flask/werkzeug hands the official validator
        def getall(self, name: str) -> list[str]:
            return {"b": ["2", "1", "2"], "a": ["x"]}[name]

    params = [("b", "2"), ("a", "x"), ("b", "1"), ("b", "2")]
    official = RequestValidator("tok").compute_signature("https://h/p", MultiDict(b="", a=""))
    assert twilio_signature(b"tok", "https://h/p", params) == official


def test_verify_twilio_accepts_official_signatures_with_or_without_default_port() -> None:
    validator = RequestValidator("auth-token")
    params = {"CallSid": "CA123", "From": "+4930901820", "Digits": "1"}
    for signed_url, seen_url in [
        ("https://cc.example.com/v1/x", "https://cc.example.com/v1/x"),
        ("https://cc.example.com:443/v1/x", "https://cc.example.com/v1/x"),
        ("https://cc.example.com/v1/x", "https://cc.example.com:443/v1/x"),
    ]:
        sig = validator.compute_signature(signed_url, params)
        assert validator.validate(seen_url, params, sig)  # the reference agrees...
        assert (
            verify_twilio(  # ...and so do we
                auth_token=b"auth-token",
                shared_keys={},
                url=seen_url,
                params=params.items(),
                signature=sig,
                settings_header=None,
            )
            is None
        )


def test_verify_twilio_failures() -> None:
    validator = RequestValidator("auth-token")
    params = {"CallSid": "CA123", "From": "+4930901820"}
    url = "https://cc.example.com/v1/x"
    sig = validator.compute_signature(url, params)

    def check(**kw: object) -> SignatureFailure | None:
        args = dict(
            auth_token=b"auth-token",
            shared_keys={},
            url=url,
            params=params.items(),
            signature=sig,
            settings_header=None,
        )
        args.update(kw)
        return verify_twilio(**args)  # type: ignore[arg-type]

    assert check() is None
    assert check(signature=None) is SignatureFailure.MISSING
    assert check(auth_token=b"wrong") is SignatureFailure.MISMATCH
    assert check(url="http://internal:8001/v1/x") is SignatureFailure.MISMATCH  # proxy URL, not Twilio's
    assert check(params=[*params.items(), ("Digits", "9")]) is SignatureFailure.MISMATCH
    assert check(settings_header="key=KS1,algorithm=HMAC_SHA256") is SignatureFailure.UNKNOWN_SOURCE
    assert check(settings_header="algorithm=HMAC_MD5") is SignatureFailure.MALFORMED


def test_verify_twilio_shared_key_sha256_as_the_official_validator_signs() -> None:
    params = {"CallSid": "CA9"}
    url = "https://cc.example.com/v1/x"
    sig = RequestValidator("shared-secret").compute_signature(url, params, "HMAC_SHA256")
    assert (
        verify_twilio(
            auth_token=b"auth-token",
            shared_keys={"KS1": b"shared-secret"},
            url=url,
            params=params.items(),
            signature=sig,
            settings_header="key=KS1,algorithm=HMAC_SHA256",
        )
        is None
    )


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=10**11), st.binary(min_size=1, max_size=40))
def test_any_body_signed_now_verifies_and_any_other_body_does_not(body: bytes, ts: int, secret: bytes) -> None:
    sig = sign_generic(secret, ts, body)
    ok = verify_generic(secret, body=body, timestamp_header=str(ts), signature_header=sig, now=ts, tolerance_seconds=1)
    assert ok is None
    other = verify_generic(
        secret, body=body + b"x", timestamp_header=str(ts), signature_header=sig, now=ts, tolerance_seconds=1
    )
    assert other is SignatureFailure.MISMATCH
