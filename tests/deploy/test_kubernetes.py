"""deploy/kubernetes: the base and the production overlay build, validate against Kubernetes 1.31, and
say what the code does (probe paths the apps serve, env names the settings read, the CLI commands).

Builds with ``kubectl kustomize`` (or a standalone ``kustomize build``); skips, saying so, where neither
is installed. The production overlay needs its gitignored ``secrets.env``: the tree is copied and the
committed ``secrets.env.example`` stands in for it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import ROOT, known_env_names, looks_secret

K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31.0"  # what every object is validated against (kubernetes-validate, strict)
STATEFUL_SERVICES = ("intake", "router", "callback")


def _kustomize() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    command = _kustomize()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is installed: cannot build deploy/kubernetes")
    tree = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("secrets.env"))
    overlay = tree / "overlays" / "production"
    shutil.copy(overlay / "secrets.env.example", overlay / "secrets.env")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, path in {"base": tree / "base", "production": overlay}.items():
        done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)} {name} failed:\n{done.stderr}"
        out[name] = [d for d in yaml.safe_load_all(done.stdout) if d]
    return out


BUILDS = ["base", "production"]


def _of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("Deployment", "Job")
    ]


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = _of(objects, "ConfigMap")
    return cm["data"]


@pytest.mark.parametrize("build", BUILDS)
def test_builds_the_expected_objects(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    kinds = {
        (o["kind"], o["metadata"]["name"].rsplit("-", 1)[0] if o["kind"] == "ConfigMap" else o["metadata"]["name"])
        for o in objects
    }
    for svc in STATEFUL_SERVICES:
        assert ("Deployment", svc) in kinds and ("Service", svc) in kinds and ("PodDisruptionBudget", svc) in kinds
    assert {
        ("Job", "switchboard-migrate"),
        ("Job", "switchboard-topics"),
        ("HorizontalPodAutoscaler", "intake"),
    } <= kinds
    if build == "production":
        assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"switchboard"}


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_validates_against_kubernetes(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    import kubernetes_validate

    for obj in built[build]:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{build}: {obj['kind']}/{obj['metadata']['name']} invalid for {KUBERNETES_VERSION}: {exc}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Whether the real app answers a GET of a path (anything but 404/405), without its lifespan: nothing
    starts, so /readyz answers 503 there, but it is served (SWITCHBOARD_ADMIN_TOKEN: tests/conftest.py)."""
    import importlib

    from fastapi.testclient import TestClient

    data = tmp_path_factory.mktemp("data")
    apps: dict[str, Any] = {}

    def serves(service: str, path: str) -> bool:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SWITCHBOARD_DATA_DIR", str(data))
            if service not in apps:
                apps[service] = TestClient(importlib.import_module(f"services.{service}.app").create_app())
            return apps[service].get(path).status_code not in (404, 405)

    return serves


@pytest.mark.parametrize("build", BUILDS)
def test_every_deployment_probes_paths_its_app_serves(
    built: dict[str, list[dict[str, Any]]], build: str, served: Any
) -> None:
    for dep in _of(built[build], "Deployment"):
        name = dep["metadata"]["name"]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["command"][:2] == ["switchboard", name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert served(name, get["path"]), f"{name} does not serve {get['path']}"
            assert get["port"] in ports and ports[get["port"]] == 8000
        assert (
            "--port" in container["command"]
            and container["command"][container["command"].index("--port") + 1] == "8000"
        )


@pytest.mark.parametrize("build", BUILDS)
def test_every_container_has_requests_and_limits(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    for name, spec in _pod_specs(built[build]):
        for container in spec["containers"]:
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), f"{name}: {part}"


@pytest.mark.parametrize("build", BUILDS)
def test_no_secret_value_is_written_into_the_manifests(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    for name, spec in _pod_specs(objects):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if looks_secret(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{name}: {env['name']}"
    assert not [k for k in _config(objects) if looks_secret(k)], "secret-looking keys in the ConfigMap"
    secrets = _of(objects, "Secret")
    if build == "base":
        assert secrets == []  # made with `kubectl create secret` (deploy/README.md)
    else:  # generated from the gitignored secrets.env: here the committed example, which holds no value
        (secret,) = secrets
        assert secret["metadata"]["name"].startswith("switchboard-secrets-")
    for path in K8S.rglob("*"):
        if path.is_file() and path.name != "secrets.env.example":
            text = path.read_text()
            assert "kind: Secret" not in text or path.name == "kustomization.yaml", path
    example = (K8S / "overlays" / "production" / "secrets.env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert value in ("", '{"acme-ivr": ""}') or "PASSWORD@" in value, f"a value in the example: {key}"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/kubernetes/overlays/production/secrets.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "secrets.env must be gitignored"


@pytest.mark.parametrize("build", BUILDS)
def test_secret_references_are_keys_of_the_example(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    example = (K8S / "overlays" / "production" / "secrets.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    for name, spec in _pod_specs(built[build]):
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in keys, f"{name}: {ref['key']} is not in secrets.env.example"


@pytest.mark.parametrize("build", BUILDS)
def test_env_names_are_settings_the_code_reads(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    known = known_env_names()
    objects = built[build]
    unknown = {k for k in _config(objects) if k not in known}
    for name, spec in _pod_specs(objects):
        for container in spec["containers"]:
            env = container.get("env", [])
            # A variable only there to be expanded into another (``$(POD_IP)``) is read by Kubernetes.
            expanded = {e["name"] for e in env if any(f"$({e['name']})" in o.get("value", "") for o in env)}
            unknown |= {f"{name}: {e['name']}" for e in env if e["name"] not in known | expanded}
    assert not unknown, f"no settings class reads {sorted(unknown)}"


@pytest.mark.parametrize("build", BUILDS)
def test_a_disruption_budget_selects_each_deployment(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    pdbs = _of(objects, "PodDisruptionBudget")
    for dep in _of(objects, "Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, dep["metadata"]["name"]
        spec = covering[0]["spec"]
        if dep["spec"].get("replicas", 2) == 1:  # a budget of 0 disruptions would block node drains for good
            assert spec.get("maxUnavailable", 0) >= 1 or spec.get("minAvailable", 1) == 0
    for pdb in pdbs:  # and each budget selects some deployment's pods
        assert any(
            pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in _of(objects, "Deployment")
        )


@pytest.mark.parametrize("build", BUILDS)
def test_services_select_their_deployment(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    for svc in _of(objects, "Service"):
        assert svc["spec"]["type"] == "ClusterIP"
        (dep,) = [d for d in _of(objects, "Deployment") if d["metadata"]["name"] == svc["metadata"]["name"]]
        assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    assert _config(objects)["SWITCHBOARD_ROUTER_CALLBACK_URL"] == "http://callback:8000"


@pytest.mark.parametrize("build", BUILDS)
def test_the_autoscaler_targets_intake_only(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    (hpa,) = _of(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "intake"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (intake,) = [d for d in _of(objects, "Deployment") if d["metadata"]["name"] == "intake"]
    assert "replicas" not in intake["spec"]  # the autoscaler owns it


@pytest.mark.parametrize("build", BUILDS)
def test_several_active_routers_each_reachable_at_its_own_address(
    built: dict[str, list[dict[str, Any]]], build: str
) -> None:
    """Routers share the domains (ownership=partitions), roll one pod at a time, and advertise the pod's
    own address for forwarded requests (not the Service's, which would pick any pod)."""
    objects = built[build]
    (router,) = [d for d in _of(objects, "Deployment") if d["metadata"]["name"] == "router"]
    partitions = int(_config(objects)["SWITCHBOARD_KAFKA_PARTITIONS"])
    assert 2 <= router["spec"]["replicas"] <= partitions  # a replica beyond the partitions would own nothing
    assert router["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (container,) = router["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SWITCHBOARD_ROUTER_OWNERSHIP"]["value"] == "partitions"
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_IP") < names.index("SWITCHBOARD_ROUTER_ADVERTISE_URL")  # $(POD_IP) expands
    assert env["SWITCHBOARD_ROUTER_ADVERTISE_URL"]["value"] == "http://$(POD_IP):8000"
    (pdb,) = [p for p in _of(objects, "PodDisruptionBudget") if p["metadata"]["name"] == "router"]
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("build", BUILDS)
def test_graceful_shutdown_fits_the_grace_period(built: dict[str, list[dict[str, Any]]], build: str) -> None:
    objects = built[build]
    config = _config(objects)
    drain = float(config["SWITCHBOARD_HTTP_GRACEFUL_SHUTDOWN_SECONDS"])
    for dep in _of(objects, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        # preStop, the HTTP drain, then consumers leave (Kafka shutdown grace 10 s) and the outbox flushes (5 s)
        assert spec["terminationGracePeriodSeconds"] >= float(command[1]) + drain + 15, dep["metadata"]["name"]


@pytest.mark.parametrize("build", BUILDS)
def test_jobs_migrate_and_create_topics_and_services_wait_for_them(
    built: dict[str, list[dict[str, Any]]], build: str
) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    objects = built[build]
    jobs = {j["metadata"]["name"]: j["spec"]["template"]["spec"]["containers"][0] for j in _of(objects, "Job")}
    assert jobs["switchboard-migrate"]["command"] == ["switchboard", "migrate"]
    assert jobs["switchboard-topics"]["command"][:3] == ["switchboard", "topics", "create"]
    migrate_env = {e["name"] for e in jobs["switchboard-migrate"].get("env", [])}
    assert {f"SWITCHBOARD_{s.upper()}_DATABASE_URL" for s in STATEFUL_SERVICES} <= migrate_env
    runner = CliRunner()
    for container in jobs.values():  # the commands exist, with these options
        result = runner.invoke(app, [*container["command"][1:], "--help"])
        assert result.exit_code == 0, result.output
    config = _config(objects)
    assert config["SWITCHBOARD_MIGRATE_ON_START"] == "false"
    assert config["SWITCHBOARD_BUS"] == "kafka"
    for dep in _of(objects, "Deployment"):
        probe = dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        # the startup probe outlasts the wait for `switchboard migrate`
        assert probe["periodSeconds"] * probe["failureThreshold"] > float(config["SWITCHBOARD_MIGRATION_WAIT_SECONDS"])


def test_the_image_user_is_the_one_the_pods_run_as() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    base = yaml.safe_load_all((K8S / "base" / "intake.yaml").read_text())
    uid = next(d for d in base if d["kind"] == "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"--uid {uid}" in dockerfile and f"USER {uid}" in dockerfile


def test_kubernetes_tree_has_no_stray_files() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/kubernetes"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [p for p in tracked if Path(p).name == "secrets.env"]
