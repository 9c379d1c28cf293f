"""Who is calling, the same way on every service: scopes, tokens, verification, FastAPI dependencies.

Three scopes, least privilege first:

* ``agent``: sees and acts on its own work only (its offers, assignments, stream, the callbacks it holds).
* ``supervisor``: reads everything, customer data included (queue, timelines, callbacks), may set an
  agent's status and set scheduling fields on callbacks; administers nothing.
* ``admin``: the operator; may do everything.

Tokens:

* **The operator (admin) token** is one shared secret, ``SWITCHBOARD_ADMIN_TOKEN`` (the old name
  ``SWITCHBOARD_ROUTER_ADMIN_TOKEN`` still works), the same on all three services. There is no built-in
  value: a service refuses to start without one (``switchboard run`` generates one and prints it).
* **Agent and supervisor tokens** are JWTs (HS256, PyJWT) signed with a key every service holds, so any
  service verifies them without asking the router. The key is ``SWITCHBOARD_TOKEN_SIGNING_KEY``, or else
  derived from the admin token (one secret to configure; rotating the admin token then invalidates every
  issued token, which is what an operator who suspects a leak wants).
* **Revocation.** An agent token is revoked when the router issues the agent a new one: the router
  accepts only the token whose hash it stores; the other services learn the agent's current token id
  from the ``agent.token_issued`` event and refuse the older ones (:class:`TokenCheck`). Supervisor tokens
  carry an expiry (issued by the admin, ``POST /v1/auth/supervisor-tokens`` on the router) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import jwt
import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)

ISSUER = "switchboard"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30  # clock skew allowed on a token's times
VERIFIED_TOKENS_KEPT = 4096  # tokens whose signature checked out, kept to skip the check (FIFO beyond)
MIN_ADMIN_TOKEN_LENGTH = 16
KNOWN_WEAK_TOKENS = frozenset({"change-me", "changeme", "admin", "secret", "password"})


class Scope(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class MissingAdminToken(RuntimeError):
    """Raised at start-up: a service never runs with no operator token or a guessable one."""


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore")

    admin_token: SecretStr | None = Field(  # type: ignore[pydantic-alias]  # env names; field name among them
        None,
        validation_alias=AliasChoices("admin_token", "SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_ROUTER_ADMIN_TOKEN"),
        description="The operator's bearer token, the same on every service (at least 16 characters). "
        "Required: no service starts without it; `switchboard run` generates one.",
    )
    token_signing_key: SecretStr | None = Field(
        None,
        description="Key that signs agent and supervisor tokens, the same on every service; default: "
        "derived from the admin token.",
    )
    supervisor_token_max_ttl_seconds: int = Field(
        7 * 24 * 3600, gt=0, description="Longest lifetime of a supervisor token the admin may issue."
    )

    def required_admin_token(self) -> str:
        token = self.admin_token.get_secret_value().strip() if self.admin_token is not None else ""
        if not token:
            raise MissingAdminToken(
                "no admin token: set SWITCHBOARD_ADMIN_TOKEN (the same on every service), "
                "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`; "
                "`switchboard run` generates one for you"
            )
        if len(token) < MIN_ADMIN_TOKEN_LENGTH or token.lower() in KNOWN_WEAK_TOKENS:
            raise MissingAdminToken(
                "SWITCHBOARD_ADMIN_TOKEN is too weak: use a random token of at least "
                f"{MIN_ADMIN_TOKEN_LENGTH} characters"
            )
        return token

    def signing_key(self) -> bytes:
        if self.token_signing_key is not None and self.token_signing_key.get_secret_value():
            return self.token_signing_key.get_secret_value().encode()
        return hmac.new(self.required_admin_token().encode(), b"switchboard token signing v1", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the operator, a supervisor (by name), or one agent."""

    scope: Scope
    subject: str
    token_id: str | None = None

    @classmethod
    def admin(cls) -> Principal:
        return cls(Scope.ADMIN, "admin")

    @classmethod
    def agent(cls, agent_id: str, token_id: str | None = None) -> Principal:
        return cls(Scope.AGENT, agent_id, token_id)

    @classmethod
    def supervisor(cls, name: str, token_id: str | None = None) -> Principal:
        return cls(Scope.SUPERVISOR, name, token_id)

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN

    @property
    def is_trusted(self) -> bool:
        """Supervisor or admin: may see customer data and set scheduling fields."""
        return self.scope in (Scope.ADMIN, Scope.SUPERVISOR)

    @property
    def agent_id(self) -> str | None:
        return self.subject if self.scope is Scope.AGENT else None

    def may_act_for(self, agent_id: str | None) -> bool:
        """Act on an agent's work (accept, decline, complete): the agent itself or the admin."""
        return self.is_admin or (agent_id is not None and self.agent_id == agent_id)

    def may_see(self, agent_id: str | None) -> bool:
        """Read an agent's work: the agent itself, a supervisor or the admin."""
        return self.is_trusted or (agent_id is not None and self.agent_id == agent_id)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: str
    expires_at: float | None


def token_hash(token: str) -> str:
    """What the router stores of an agent token (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenError(Exception):
    """The token is not one of ours, expired, or revoked (always answered 401, reason only logged)."""


# Asked after the signature checks out: may a still-valid-looking agent token be used (not revoked)?
TokenCheck = Callable[[Principal, str], Awaitable[bool]]


class Authenticator:
    """Turns a bearer token into a :class:`Principal`; issues agent and supervisor tokens."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._admin = settings.required_admin_token().encode()
        self._key = settings.signing_key()
        self.max_supervisor_ttl = settings.supervisor_token_max_ttl_seconds
        self._clock = clock
        self.token_check: TokenCheck | None = None  # set by the service once its database is up
        # token -> its principal and expiry (None: never), for tokens whose signature and claims checked
        # out. Every agent action carries the same token, and its HMAC and claims checks were 3 % of the
        # router's CPU under load. Only verified tokens get in, so a flood of forged ones cannot fill it.
        self._verified: dict[str, tuple[Principal, float | None]] = {}

    # -- issuing ---------------------------------------------------------------------------------

    def _issue(self, scope: Scope, subject: str, ttl_seconds: float | None) -> IssuedToken:
        now = int(self._clock())
        token_id = uuid.uuid4().hex
        claims: dict[str, Any] = {"iss": ISSUER, "sub": subject, "scope": scope.value, "jti": token_id, "iat": now}
        expires = None
        if ttl_seconds is not None:
            expires = now + int(ttl_seconds)
            claims["exp"] = expires
        return IssuedToken(jwt.encode(claims, self._key, algorithm=ALGORITHM), token_id, expires)

    def issue_agent_token(self, agent_id: str) -> IssuedToken:
        return self._issue(Scope.AGENT, agent_id, None)

    def issue_supervisor_token(self, name: str, ttl_seconds: float) -> IssuedToken:
        if not 0 < ttl_seconds <= self.max_supervisor_ttl:
            raise ValueError(f"ttl_seconds must be in (0, {self.max_supervisor_ttl}]")
        return self._issue(Scope.SUPERVISOR, name, ttl_seconds)

    # -- verifying -------------------------------------------------------------------------------

    def decode(self, token: str) -> Principal:
        """The principal of a signed token (no revocation check), or :class:`TokenError`. A token verified
        before is not verified again, but its expiry still is, on every use."""
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if self._expired(expires):
                del self._verified[token]
                raise TokenError("ExpiredSignatureError")
            return principal
        principal, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            del self._verified[next(iter(self._verified))]  # the oldest kept
        self._verified[token] = principal, expires
        return principal

    def _verify(self, token: str) -> tuple[Principal, float | None]:
        if len(token) > 4096:
            raise TokenError("token too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["iss", "sub", "scope", "jti", "iat"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as exc:
            raise TokenError(type(exc).__name__) from None
        try:
            scope = Scope(claims["scope"])
        except ValueError:
            raise TokenError("unknown scope") from None
        if scope is Scope.ADMIN or not isinstance(claims["sub"], str) or not isinstance(claims["jti"], str):
            raise TokenError("bad claims")  # the admin is only ever the operator token itself
        if scope is Scope.SUPERVISOR and "exp" not in claims:
            raise TokenError("supervisor token without expiry")
        expires = claims.get("exp")
        if self._expired(expires):
            raise TokenError("ExpiredSignatureError")  # by this authenticator's clock, as when kept
        return Principal(scope, claims["sub"], claims["jti"]), expires

    def _expired(self, expires: float | None) -> bool:
        """Past its expiry by this authenticator's clock, beyond the allowed skew (None: never expires)."""
        return expires is not None and self._clock() > expires + LEEWAY_SECONDS

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise unauthorized()
        if hmac.compare_digest(token.encode("utf-8", "replace"), self._admin):
            return Principal.admin()
        try:
            principal = self.decode(token)
        except TokenError as exc:
            log.info("auth.token_refused", reason=str(exc))
            raise unauthorized() from None
        if principal.scope is Scope.AGENT and self.token_check is not None:
            if not await self.token_check(principal, token):
                log.info("auth.token_refused", reason="revoked", agent_id=principal.subject)
                raise unauthorized("token revoked or agent unknown")
        return principal


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# -- HTTP --------------------------------------------------------------------------------------------


def unauthorized(detail: str = "missing or invalid bearer token") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str = "not allowed for this token") -> HTTPException:
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The operator (admin) token, or an agent or supervisor token (a JWT issued by the router).",
)


def install_auth(app: Any, authenticator: Authenticator) -> None:
    app.state.auth = authenticator


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    return await authenticator_of(request).authenticate(credentials.credentials if credentials else None)


async def trusted(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.is_trusted:
        raise forbidden("this endpoint needs a supervisor or admin token")
    return principal


async def admin_only(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.is_admin:
        raise forbidden("this endpoint needs the admin token")
    return principal


Authenticated = Annotated[Principal, Depends(authenticated)]
Trusted = Annotated[Principal, Depends(trusted)]
AdminOnly = Annotated[Principal, Depends(admin_only)]
