"""Domain errors of the router service, mapped to HTTP status codes by the API layer."""

from __future__ import annotations


class RouterError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(RouterError):
    status_code = 404


class Forbidden(RouterError):
    status_code = 403


class Conflict(RouterError):
    """The request is valid but the state does not allow it (offer already answered, expired...)."""

    status_code = 409


class Invalid(RouterError):
    """Semantically invalid input that pydantic alone cannot see (depends on state or strategy)."""

    status_code = 422


class NotOwnedHere(RouterError):
    """The routing domain is another router's (several active routers): the request is normally
    forwarded to its owner; this answers the moment ownership moves between the two."""

    status_code = 503
