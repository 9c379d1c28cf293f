"""Bearer-token authentication: one admin token, and one token per agent issued at registration.

Agent tokens are 256-bit random secrets; only their SHA-256 is stored (a slow KDF buys nothing for
secrets with that much entropy), compared in constant time. An agent may see and act only on its own
offers and assignments; the admin may do everything (supervisors, ops tooling).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

_BEARER = "bearer"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or one agent."""

    is_admin: bool
    agent_id: str | None = None

    def may_act_for(self, agent_id: str) -> bool:
        return self.is_admin or self.agent_id == agent_id


def unauthorized(detail: str = "missing or invalid bearer token") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str = "not allowed for this token") -> HTTPException:
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != _BEARER or not token.strip():
        return None
    return token.strip()
