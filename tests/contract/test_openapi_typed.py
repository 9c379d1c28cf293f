"""Every service publishes a typed boundary (issue 19): each operation's success answer has a schema a
client can generate code from, and each operation says how it is authenticated.

The documents are read from the apps as built (``app.openapi()``), without starting them. A schema is
"typed" when it is a ``$ref`` or a concrete type; a free-form object (``dict[str, Any]``) or an empty
``{}`` is not. Only the probes and the scrape (and the router's two static pages, which ask for a token
in the browser and load everything else behind the bearer scheme) are public on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from shared.settings import CommonSettings

SUCCESS = ("200", "201", "202")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PROBES = {"/healthz", "/livez", "/readyz", "/metrics"}
PUBLIC_PAGES = {"router": {"/agent", "/ops/dashboard"}}


def _common(tmp_path: Path) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path, log_json=False, log_level="WARNING")


def _intake(tmp_path: Path) -> FastAPI:
    from services.intake.app import create_app

    return create_app(None, _common(tmp_path))


def _callback(tmp_path: Path) -> FastAPI:
    from services.callback.app import create_app

    return create_app(_common(tmp_path))


def _connector(tmp_path: Path) -> FastAPI:
    from services.connector.app import create_app

    return create_app(_common(tmp_path))


def _router(tmp_path: Path) -> FastAPI:
    from services.router.app import create_app

    return create_app(None, _common(tmp_path))


APPS: dict[str, Callable[[Path], FastAPI]] = {
    "intake": _intake,
    "callback": _callback,
    "connector": _connector,
    "router": _router,
}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    assert name != ref, f"unexpected $ref {ref}"
    return spec["components"]["schemas"][name]  # type: ignore[no-any-return]


def untyped(spec: dict[str, Any], schema: dict[str, Any] | bool, seen: frozenset[str] = frozenset()) -> str | None:
    """Why ``schema`` is not typed, or None when it is."""
    if not isinstance(schema, dict) or not schema:
        return "no schema"
    if "$ref" in schema:
        if schema["$ref"] in seen:
            return None  # recursive: typed where it was first seen
        target = resolve(spec, schema)
        # A component that is itself a free-form object is no better than an inline one.
        return untyped(spec, target, seen | {schema["$ref"]})
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            reasons = [untyped(spec, branch, seen) for branch in schema[key] if branch.get("type") != "null"]
            return next((r for r in reasons if r), None) if reasons else "only null"
    kind = schema.get("type")
    if schema.get("properties"):
        return None
    if kind in ("string", "integer", "number", "boolean") or "enum" in schema or "const" in schema:
        return None
    if kind == "array":
        return untyped(spec, schema.get("items", {}), seen)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return untyped(spec, extra, seen)
        return "a free-form object"
    return f"no type ({sorted(schema)})"


def untyped_answers(spec: dict[str, Any]) -> list[str]:
    problems = []
    for method, path, op in operations(spec):
        answers = {code: r for code, r in op.get("responses", {}).items() if code in SUCCESS}
        if not answers:
            problems.append(f"{method} {path}: no 200/201/202 answer declared")
        for code, answer in answers.items():
            content = answer.get("content") or {}
            if not content:
                problems.append(f"{method} {path} {code}: no content declared")
            for media, body in content.items():
                why = untyped(spec, body.get("schema", {}))
                if why:
                    problems.append(f"{method} {path} {code} {media}: {why}")
    return problems


def unsecured_operations(service: str, spec: dict[str, Any]) -> list[str]:
    schemes = set(spec.get("components", {}).get("securitySchemes", {}))
    public = PROBES | PUBLIC_PAGES.get(service, set())
    problems = []
    for method, path, op in operations(spec):
        if path in public:
            continue
        requirements = op.get("security", spec.get("security"))
        named = [name for requirement in requirements or [] for name in requirement]
        if not named:
            problems.append(f"{method} {path}: no security requirement")
        problems += [f"{method} {path}: undeclared scheme {name!r}" for name in named if name not in schemes]
    return problems


@pytest.mark.parametrize("service", ["intake", "callback", "connector", "router"])
def test_every_success_answer_has_a_typed_schema(service: str, tmp_path: Path) -> None:
    spec = APPS[service](tmp_path).openapi()
    assert not untyped_answers(spec), "\n".join(untyped_answers(spec))


@pytest.mark.parametrize("service", ["intake", "callback", "connector", "router"])
def test_every_operation_declares_its_security(service: str, tmp_path: Path) -> None:
    spec = APPS[service](tmp_path).openapi()
    problems = unsecured_operations(service, spec)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_are_for() -> None:
    """The rules themselves: a free-form dict, an empty schema and a missing requirement are caught."""
    spec: dict[str, Any] = {
        "components": {
            "schemas": {"Free": {"type": "object", "additionalProperties": True}, "Typed": {"properties": {"a": {}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/a": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {}}}}}}},
            "/b": {"get": {"responses": {"200": {"content": {"application/json": {"$ref": "x"}}}}}},
            "/c": {
                "get": {
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Free"}}}}
                    },
                    "security": [{"bearer": []}],
                }
            },
            "/d": {
                "post": {
                    "responses": {
                        "201": {
                            "content": {
                                "application/json": {
                                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Typed"}}
                                }
                            }
                        }
                    },
                    "security": [{"nope": []}],
                }
            },
            "/e": {"get": {"responses": {"204": {"description": "nothing"}}, "security": [{}]}},
        },
    }
    answers = untyped_answers(spec)
    assert [a.split(":")[0] for a in answers] == [
        "GET /a 200 application/json",
        "GET /b 200 application/json",
        "GET /c 200 application/json",
        "GET /e",
    ]
    assert "a free-form object" in answers[2]
    assert unsecured_operations("x", spec) == [
        "GET /a: no security requirement",
        "GET /b: no security requirement",
        "POST /d: undeclared scheme 'nope'",
        "GET /e: no security requirement",
    ]
