"""The published event contract: docs/asyncapi.yaml and schemas/<type>.json.

Both are generated (``switchboard asyncapi --out docs/asyncapi.yaml --schemas schemas``) and committed; these
tests fail when the committed files differ from what the code generates, so the contract cannot drift from
shared/events.py and shared/topics.py. Regenerate with that command after changing an event.

The AsyncAPI document is validated against the official AsyncAPI 3.0.0 JSON Schema, vendored from the npm
package @asyncapi/specs (tests/contract/vendor/asyncapi/README.md says which file and why), with ``jsonschema``:
PyPI has no maintained validator for AsyncAPI 3 documents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from services.cli import app
from shared import asyncapi, topics
from shared.events import EVENT_TYPES, SCHEMA_BASE, STRUCTURED_CONTENT_TYPE, make_event
from tests.contract.samples import sample_events

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"
SCHEMAS = ROOT / "schemas"
ASYNCAPI_SCHEMA = Path(__file__).parent / "vendor" / "asyncapi" / "asyncapi-3.0.0.schema.json"
REGENERATE = "regenerate: switchboard asyncapi --out docs/asyncapi.yaml --schemas schemas"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(DOC.read_text())


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# ----------------------------------------------------------------------------------------- no drift


def test_committed_asyncapi_document_is_what_the_code_generates() -> None:
    assert DOC.read_text() == asyncapi.render_asyncapi(), REGENERATE


def test_committed_data_schemas_are_what_the_code_generates() -> None:
    generated = {name: asyncapi.render_schema(schema) for name, schema in asyncapi.data_schemas().items()}
    committed = {path.name: path.read_text() for path in SCHEMAS.glob("*.json")}
    # A schema of a retired event type may stay published; every current one must be there, identical.
    assert {name: committed.get(name) for name in generated} == generated, REGENERATE


def test_the_command_writes_exactly_the_committed_files(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["asyncapi", "--out", str(tmp_path / "asyncapi.yaml"), "--schemas", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "asyncapi.yaml").read_text() == DOC.read_text()
    for name in asyncapi.data_schemas():
        assert (tmp_path / name).read_text() == (SCHEMAS / name).read_text()
    stdout = runner.invoke(app, ["asyncapi"])
    assert stdout.exit_code == 0 and stdout.stdout == DOC.read_text()


# ------------------------------------------------------------------------------ the AsyncAPI document


def test_the_document_is_valid_asyncapi_3(
    document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in asyncapi_validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("channels", "contacts", "address"), 5),
        (("operations", "publish.contacts", "action"), "publish"),  # AsyncAPI 2 wording
        (("components", "messages", "switchboard.contact.requested.v1", "bindings", "kafka", "partition"), 1),
        (("servers", "kafka", "protocol"), None),
    ],
)
def test_the_validator_does_catch_mistakes(
    document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator, path: tuple[str, ...], bad: object
) -> None:
    """The vendored schema really checks deep inside the document (not a schema that accepts anything)."""
    broken = json.loads(json.dumps(document))
    node = broken
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    assert not asyncapi_validator.is_valid(broken)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves_and_operations_use_their_channels_messages(document: dict[str, Any]) -> None:
    """What the AsyncAPI parser checks beyond the JSON Schema."""
    refs = _refs(document)
    assert refs
    for ref in refs:
        _resolve(document, ref)
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name


def test_channels_are_the_topics_and_their_dead_letter_topics_with_every_event_type(
    document: dict[str, Any],
) -> None:
    expected = {t for topic in topics.ALL_TOPICS for t in (topic, topics.dlq(topic))}
    assert {c["address"] for c in document["channels"].values()} == expected
    on_channels = {name for topic in topics.ALL_TOPICS for name in document["channels"][topic]["messages"]}
    assert on_channels == set(EVENT_TYPES)
    for topic in topics.ALL_TOPICS:
        for cls in topics.event_types_on(topic):
            message = document["components"]["messages"][cls.event_type]
            assert message["contentType"] == STRUCTURED_CONTENT_TYPE
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string" and asyncapi._key_description(topic) in key["description"]
            data = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
            assert _resolve(document, data)["title"] == cls.__name__


def test_the_documented_keys_are_the_keys_the_bus_uses() -> None:
    for data in sample_events():
        topic, key = topics.route(data)
        assert key == topics.KEY_FORMATS[topic].format(data=data)


def test_the_documented_replay_header_is_the_one_the_dlq_command_writes() -> None:
    from services.dlq import REPLAYED_FROM

    assert asyncapi.REPLAYED_FROM == REPLAYED_FROM


def _registry(document: dict[str, Any]) -> Any:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    return Registry().with_resource("urn:asyncapi", Resource(contents=document, specification=DRAFT7))


@pytest.mark.parametrize("full", [True, False], ids=["every-field", "required-fields"])
def test_events_the_project_writes_match_their_asyncapi_message(document: dict[str, Any], full: bool) -> None:
    """The message payload schemas (envelope + data) accept the project's own events."""
    registry = _registry(document)
    for data in sample_events(full):
        envelope = json.loads(make_event(data, source="switchboard/test").to_bytes())
        payload = document["components"]["messages"][data.event_type]["payload"]
        schema = json.loads(json.dumps(payload).replace('"#/', '"urn:asyncapi#/'))
        validator = jsonschema.Draft7Validator(schema, registry=registry, format_checker=jsonschema.FormatChecker())
        errors = [e.message for e in validator.iter_errors(envelope)]
        assert errors == [], data.event_type
        assert not validator.is_valid({**envelope, "type": "switchboard.something.else.v1"})
        assert not validator.is_valid({**envelope, "data": {**envelope["data"], "tenant_id": 7}})


# ------------------------------------------------------------------------------------- data schemas


def test_every_envelopes_dataschema_resolves_to_a_committed_schema_of_that_type() -> None:
    for data in sample_events():
        url = make_event(data, source="switchboard/test").dataschema
        assert url is not None and url.startswith(SCHEMA_BASE + "/")
        path = SCHEMAS / url.removeprefix(SCHEMA_BASE + "/")
        assert path.is_file(), url
        schema = json.loads(path.read_text())
        assert schema["$id"] == url
        assert schema["title"] == type(data).__name__


@pytest.mark.parametrize("full", [True, False], ids=["every-field", "required-fields"])
def test_payloads_validate_against_their_committed_schema(full: bool) -> None:
    for data in sample_events(full):
        schema = json.loads((SCHEMAS / asyncapi.schema_file(data.event_type)).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        instance = data.model_dump(mode="json")
        assert [e.message for e in validator.iter_errors(instance)] == [], data.event_type
        required = schema.get("required", [])
        if required:
            assert not validator.is_valid({k: v for k, v in instance.items() if k != required[0]})
