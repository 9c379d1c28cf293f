"""The authenticator keeps the tokens it verified (every agent action carries the same one) without
weakening the check: expiry is still judged on every use, forged tokens never get in, and what is kept
stays bounded."""

from __future__ import annotations

import time

import jwt
import pytest

from shared import auth
from shared.auth import Authenticator, AuthSettings, Scope, TokenError
from tests.conftest import TEST_ADMIN_TOKEN


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authenticator(clock: Clock) -> Authenticator:
    return Authenticator(AuthSettings(admin_token=TEST_ADMIN_TOKEN), clock=clock)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature was checked (PyJWT called)."""
    seen: list[str] = []
    decode = jwt.decode

    def counted(token: str, *args: object, **kwargs: object) -> object:
        seen.append(token)
        return decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counted)
    return seen


def test_a_token_verified_once_is_not_verified_again(authenticator: Authenticator, verifications: list[str]) -> None:
    token = authenticator.issue_agent_token("alice").token
    first = authenticator.decode(token)
    assert (first.scope, first.subject) == (Scope.AGENT, "alice")
    for _ in range(5):
        assert authenticator.decode(token) == first
    assert verifications == [token]


def test_a_kept_token_still_expires(authenticator: Authenticator, clock: Clock, verifications: list[str]) -> None:
    token = authenticator.issue_supervisor_token("sam", ttl_seconds=60).token
    assert authenticator.decode(token).subject == "sam"
    clock.now += 60 + auth.LEEWAY_SECONDS - 1
    assert authenticator.decode(token).subject == "sam"  # within the leeway
    clock.now += 2
    with pytest.raises(TokenError):
        authenticator.decode(token)
    with pytest.raises(TokenError):
        authenticator.decode(token)  # and again: it is verified anew, and refused again
    assert verifications == [token, token]


def test_a_token_expired_by_the_authenticators_clock_is_refused_at_first_sight(
    authenticator: Authenticator, clock: Clock
) -> None:
    token = authenticator.issue_supervisor_token("sam", ttl_seconds=60).token
    clock.now += 3600  # PyJWT's own clock (the wall clock) still says valid
    with pytest.raises(TokenError):
        authenticator.decode(token)


def test_forged_tokens_are_never_kept(authenticator: Authenticator, verifications: list[str]) -> None:
    claims = {"iss": "switchboard", "sub": "alice", "scope": "agent", "jti": "x", "iat": int(time.time())}
    forged = jwt.encode(claims, b"not-our-key-not-our-key-not-our-key!", algorithm="HS256")
    for _ in range(3):
        with pytest.raises(TokenError):
            authenticator.decode(forged)
    assert verifications == [forged] * 3  # checked each time: a refusal is not remembered as a pass


def test_what_is_kept_stays_bounded(
    authenticator: Authenticator, monkeypatch: pytest.MonkeyPatch, verifications: list[str]
) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_KEPT", 3)
    tokens = [authenticator.issue_agent_token(f"a{i}").token for i in range(5)]
    for token in tokens:
        authenticator.decode(token)
    assert len(authenticator._verified) == 3
    authenticator.decode(tokens[0])  # the oldest went: verified again
    authenticator.decode(tokens[4])  # the newest is kept
    assert verifications == [*tokens, tokens[0]]
