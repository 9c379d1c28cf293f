"""Reading requests defensively: size limit before reading, content type, JSON/form parsing, 422 bodies.

Bodies are read by hand rather than by FastAPI's body parameters because the signature must be checked
over the exact bytes received, and the size limit must hold before a large body is buffered.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import BaseModel, ValidationError

from services.intake.service import IntakeError

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 200


class InvalidInput(Exception):
    """422 with FastAPI-style field-level errors: ``{"detail": [{"loc", "msg", "type"}]}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid input")
        self.errors = errors


def field_error(loc: list[str | int], msg: str, type_: str = "value_error") -> InvalidInput:
    return InvalidInput([{"loc": loc, "msg": msg, "type": type_}])


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(mt: str) -> bool:
    return mt == JSON or (mt.startswith("application/") and mt.endswith("+json"))


def require_media_type(request: Request, *accepted: str) -> str:
    mt = media_type(request)
    if (JSON in accepted and is_json(mt)) or mt in accepted:
        return JSON if is_json(mt) else mt
    raise IntakeError(415, "unsupported_media_type", f"Content-Type must be one of: {', '.join(accepted)}")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise IntakeError(400, "bad_content_length", "Content-Length is not a number")
        if int(declared) > limit:
            raise IntakeError(413, "too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise IntakeError(413, "too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise field_error(["body"], f"malformed JSON: {exc}", "json_invalid") from None
    except (RecursionError, ValueError) as exc:
        raise field_error(["body"], f"unparseable JSON: {exc}", "json_invalid") from None


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Form pairs in order, blanks kept (Twilio signs them too)."""
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise field_error(["body"], "form body is not UTF-8", "form_invalid") from None
    except ValueError as exc:
        raise field_error(["body"], f"malformed form: {exc}", "form_invalid") from None


def validate(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_errors(exc)) from None


def validation_errors(exc: ValidationError, prefix: tuple[str, ...] = ("body",)) -> list[dict[str, Any]]:
    """Field-level messages without echoing input (it may hold personal data)."""
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header (a structured-field string; plain tokens accepted too)."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 1 <= len(value) <= 255 or not value.isascii() or not value.isprintable():
        raise field_error(["header", "Idempotency-Key"], "must be 1-255 printable ASCII characters")
    return value


def public_url(request: Request, public_base_url: str | None, trust_forwarded: bool) -> str:
    """The URL the sender called: what Twilio signed. Behind a proxy it is not the one we see."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    tail = path + (f"?{query}" if query else "")
    if public_base_url:
        return public_base_url + tail
    scheme = request.url.scheme
    host = request.headers.get("host", request.url.netloc)
    if trust_forwarded:
        scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip() or host
    return f"{scheme}://{host}{tail}"
