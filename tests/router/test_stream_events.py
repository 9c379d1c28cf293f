"""The SSE events are published (issue 19): every event name the router sends on a stream has a model,
the OpenAPI document maps each name to its schema, and what a real flow sends validates against both
the model and the published schema."""

from __future__ import annotations

import ast
import importlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from services.router.stream_events import (
    AGENT_STREAM_EVENTS,
    DASHBOARD_STREAM_EVENTS,
    SSE_EVENTS_EXTENSION,
    SSE_MEDIA_TYPE,
    OfferClosedEvent,
    WrongStreamEvent,
)
from services.router.unit_of_work import UnitOfWork
from shared.events import AgentDialed, Channel, DialResult
from tests.router.conftest import ADMIN, Router, agent_stream, contact, running_router, write_strategy

ROUTER = Path(__file__).resolve().parents[2] / "services" / "router"
STREAMS = {
    "/v1/agents/{agent_id}/stream": AGENT_STREAM_EVENTS,
    "/v1/ops/dashboard/stream": DASHBOARD_STREAM_EVENTS,
}


def _event_name(module: str, node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):  # a module constant such as HANDLING_OVERRUN
        value = getattr(importlib.import_module(module), node.id)
        assert isinstance(value, str), f"{module}: {node.id} is not an event name"
        return value
    raise AssertionError(f"{module}: an event name the test cannot read ({ast.dump(node)}); use a literal")


def sent_event_names() -> dict[str, set[str]]:
    """The event names in the router's source: ``tx.push(agent, name, ...)`` goes on the agent's stream,
    ``sse_data(EVENTS, name, ...)`` on the stream whose registry it names."""
    sent: dict[str, set[str]] = {"agent": set(), "dashboard": set()}
    for path in ROUTER.rglob("*.py"):
        module = ".".join(path.relative_to(ROUTER.parents[1]).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "push" and len(node.args) == 3:
                sent["agent"].add(_event_name(module, node.args[1]))
            elif isinstance(func, ast.Name) and func.id == "sse_data" and len(node.args) == 3:
                registry = node.args[0]
                assert isinstance(registry, ast.Name), f"{module}: sse_data takes a registry by name"
                stream = {"AGENT_STREAM_EVENTS": "agent", "DASHBOARD_STREAM_EVENTS": "dashboard"}[registry.id]
                if isinstance(node.args[1], ast.Constant):
                    sent[stream].add(_event_name(module, node.args[1]))
    return sent


def test_every_event_the_router_sends_has_a_model_and_every_model_is_sent() -> None:
    sent = sent_event_names()
    assert sent["agent"] == set(AGENT_STREAM_EVENTS)
    assert sent["dashboard"] == set(DASHBOARD_STREAM_EVENTS)


def test_a_payload_of_the_wrong_model_or_field_fails_where_it_is_made() -> None:
    tx = UnitOfWork(session=None, source="test", now=0.0)  # type: ignore[arg-type]
    closed = OfferClosedEvent(offer_id="o", contact_id="c", state="declined", reason=None)
    with pytest.raises(WrongStreamEvent):
        tx.push("alice", "offer", closed)
    with pytest.raises(WrongStreamEvent):
        tx.push("alice", "no_such_event", closed)
    with pytest.raises(ValueError, match="extra"):
        OfferClosedEvent(offer_id="o", contact_id="c", state="declined", reason=None, typo=1)  # type: ignore[call-arg]
    tx.push("alice", "offer_closed", closed)
    assert tx.pushes == [("alice", "offer_closed", closed)]


def openapi(tmp_path: Path) -> dict[str, Any]:
    from services.router.app import create_app
    from services.router.settings import RouterSettings
    from shared.settings import CommonSettings
    from tests.router.conftest import ADMIN_TOKEN

    common = CommonSettings(data_dir=tmp_path, log_json=False, log_level="WARNING")
    return create_app(RouterSettings(admin_token=ADMIN_TOKEN), common).openapi()


def validator(spec: dict[str, Any], ref: str) -> Draft202012Validator:
    """A validator of one published schema, its ``$ref``s resolved in the OpenAPI document."""
    return Draft202012Validator({"$ref": ref, "components": spec["components"]})


def test_the_stream_routes_publish_their_events(tmp_path: Path) -> None:
    spec = openapi(tmp_path)
    for path, events in STREAMS.items():
        ok = spec["paths"][path]["get"]["responses"]["200"]
        assert list(ok["content"]) == [SSE_MEDIA_TYPE]
        published = ok[SSE_EVENTS_EXTENSION]
        assert set(published) == set(events), path
        listed = {branch["$ref"] for branch in ok["content"][SSE_MEDIA_TYPE]["schema"]["anyOf"]}
        for name, model in events.items():
            ref = published[name]["$ref"]
            assert ref in listed
            component = spec["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
            assert component["title"] == model.__name__
            Draft202012Validator.check_schema(component)
            assert not validator(spec, ref).is_valid({}), f"{name}: the published schema requires nothing"


def check(spec: dict[str, Any], path: str, received: list[tuple[str, Any]]) -> None:
    """Each received payload is its event's model, and valid against the published schema."""
    events: dict[str, type[BaseModel]] = STREAMS[path]
    published = spec["paths"][path]["get"]["responses"]["200"][SSE_EVENTS_EXTENSION]
    for name, data in received:
        assert name in events, f"an event without a model: {name}"
        events[name].model_validate(data)
        errors = list(validator(spec, published[name]["$ref"]).iter_errors(data))
        assert not errors, f"{name}: {[e.message for e in errors]}"


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_a_real_flow_sends_only_valid_payloads(tmp_path: Path) -> None:
    """Offer, decline, accept, a dial that failed, a handling overrun, completion, status: every agent
    stream event but none left out, then the dashboard's snapshot."""
    clock = Clock()
    strategy = write_strategy(
        tmp_path / "s.yaml",
        channels={"chat": {"wrap_up_seconds": 5}},
        roles={"service": {"allowed_handling_seconds": 10}},
    )
    spec = openapi(tmp_path / "spec")
    async with running_router(tmp_path / "data", strategy_path=strategy, clock=clock) as router:
        _, alice = await router.register(
            "alice",
            roles=["service"],
            capacity={"chat": 1, "voice": 1},
            contact_uris={"voice": "client:alice"},
        )
        async with agent_stream(router.url, "alice", alice) as stream:
            await stream.wait_for("hello")
            first = contact("ev-1")
            await router.emit(first)
            offer = await stream.wait_for("offer", lambda d: d["contact_id"] == first.contact_id)
            r = await router.client.post(f"/v1/offers/{offer['offer_id']}/decline", headers=alice)
            assert r.status_code == 200, r.text
            await stream.wait_for("offer_closed")

            call = contact("ev-call", channel=Channel.VOICE)
            await router.emit(call)
            await accept(router, stream, alice, call.contact_id)
            await router.emit(AgentDialed(contact_id=call.contact_id, agent_id="alice", result=DialResult.CALLER_GONE))
            await stream.wait_for("assignment_withdrawn")

            chat = contact("ev-2")
            await router.emit(chat)
            await accept(router, stream, alice, chat.contact_id)
            clock.offset += 30  # held 30 s against 10 s allowed
            await stream.wait_for("handling_overrun")
            r = await router.client.post(
                f"/v1/contacts/{chat.contact_id}/complete", json={"resolved": True}, headers=alice
            )
            assert r.status_code == 200, r.text
            await stream.wait_for("assignment_completed")
            await stream.wait_for("work", lambda d: d["activity"] == "wrap_up")
            r = await router.client.put("/v1/agents/alice/status", json={"status": "break"}, headers=alice)
            assert r.status_code == 200, r.text
            await stream.wait_for("status")
        received = list(stream.events)
        assert {name for name, _ in received} == set(AGENT_STREAM_EVENTS)
        check(spec, "/v1/agents/{agent_id}/stream", received)

        check(spec, "/v1/ops/dashboard/stream", await dashboard_events(router))


async def accept(router: Router, stream: Any, headers: dict[str, str], contact_id: str) -> None:
    offer = await stream.wait_for("offer", lambda d: d["contact_id"] == contact_id)
    r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=headers)
    assert r.status_code == 200, r.text
    await stream.wait_for("assignment", lambda d: d["contact_id"] == contact_id)


async def dashboard_events(router: Router) -> list[tuple[str, Any]]:
    async with httpx.AsyncClient(base_url=router.url, timeout=10) as client:
        async with client.stream("GET", "/v1/ops/dashboard/stream", headers=ADMIN) as resp:
            assert resp.status_code == 200
            event = ""
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    return [(event, json.loads(line[5:]))]
    raise AssertionError("the dashboard stream sent nothing")
