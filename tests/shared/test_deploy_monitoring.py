"""deploy/: the Grafana dashboard queries only metrics (and labels) the services really define, and
Prometheus and Grafana are wired into docker-compose.yml. A renamed metric breaks this test, not a
dashboard nobody looks at until the night it matters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import services.callback.metrics
import services.intake.metrics
import services.router.metrics
import shared.observability  # noqa: F401 (registers the bus metrics)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "switchboard.json"
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("_sum", "_count"),
}
SELECTOR = re.compile(r"(switchboard_[a-z0-9_]+)(\{[^}]*\})?")


def defined_series() -> dict[str, set[str]]:
    """Every series name the code registers, with the label names it carries."""
    assert services.router.metrics and services.intake.metrics and services.callback.metrics
    out: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 (the only way to list collectors)
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            if not family.name.startswith("switchboard_"):
                continue
            for suffix in SUFFIXES.get(family.type, ("",)):
                out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_every_dashboard_query_names_a_metric_and_labels_the_code_defines() -> None:
    series = defined_series()
    assert "switchboard_callback_promises_today" in series and "switchboard_router_offers_total" in series
    used: set[str] = set()
    for expr in queries():
        refs = SELECTOR.findall(expr)
        assert refs, f"query names no switchboard metric: {expr}"
        for name, selector in refs:
            assert name in series, f"{name} (in {expr!r}) is not defined by any service"
            used.add(name)
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in series[name], f"{name} has no label {label!r} (in {expr!r})"
        for by in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in by.split(",")):
                assert any(label in series[n] for n, _ in refs), f"no metric in {expr!r} has label {label!r}"
    # The main panels are there: service level, staffing, queue, promises, intake.
    for needed in (
        "switchboard_router_service_level",
        "switchboard_router_staffing_agents_needed",
        "switchboard_router_waiting_contacts",
        "switchboard_callback_promises_today",
        "switchboard_callback_same_day_fulfilment_rate",
        "switchboard_intake_rejected_total",
        "switchboard_router_waiting_contacts_by_role",
        "switchboard_router_handling_time_seconds_bucket",
        "switchboard_router_sales_share",
        "switchboard_router_goodwill_budget",
        "switchboard_bus_consumer_lag",
        "switchboard_bus_dlq_size",
    ):
        assert needed in used, f"the dashboard shows no {needed}"


def test_label_values_the_dashboard_filters_on_are_ones_the_code_sets() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    for expr in queries():
        for value in re.findall(r'=\s*"([^"]+)"', expr):
            assert f'"{value}"' in source, f"no code sets the label value {value!r} used in {expr!r}"


def test_prometheus_and_grafana_are_wired_into_compose() -> None:
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"intake:8000", "router:8000", "callback:8000", "connector:8000"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"intake", "router", "callback", "connector"} <= set(compose)  # the scrape targets are compose services
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in compose["prometheus"]["volumes"]
    mounts = " ".join(compose["grafana"]["volumes"])
    assert "./deploy/grafana/dashboards" in mounts and "./deploy/grafana/provisioning" in mounts
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    dash = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {uid}
