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
