"""The router's side of authentication; principals, scopes and verification live in ``shared.auth``.

Agent tokens are JWTs signed with the deployment's signing key (any service can verify them); the router
additionally keeps the SHA-256 of each agent's current token, so re-issuing a token revokes the old one
here at once (``agent_for_token``), and announces the new token's id to the other services.
"""

from __future__ import annotations

import secrets

from shared.auth import IssuedToken, Principal, forbidden, token_hash, unauthorized

__all__ = ["IssuedToken", "Principal", "forbidden", "hash_token", "new_token", "unauthorized"]

hash_token = token_hash


def new_token() -> str:
    """An opaque random token (unit tests that build the service without a signing key)."""
    return secrets.token_urlsafe(32)


class KnownTokens:
    """Token hash -> agent, as looked up: every agent request is authenticated, and a database read for
    each was a tenth of the statements of a contact's lifecycle. Forgotten whenever a token is (re)issued."""

    def __init__(self) -> None:
        self._agent_of: dict[str, str] = {}
        self.generation = 0  # moves on each forget(): a lookup that raced a new token is not kept

    def get(self, digest: str) -> str | None:
        return self._agent_of.get(digest)

    def remember(self, digest: str, agent_id: str, generation: int) -> None:
        """Keep a lookup made at ``generation``, unless a token was (re)issued since."""
        if generation == self.generation:
            self._agent_of[digest] = agent_id

    def forget(self) -> None:
        self.generation += 1
        self._agent_of.clear()
