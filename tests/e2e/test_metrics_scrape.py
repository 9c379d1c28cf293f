"""Issue 17's "metrics, complete and consistent", checked against the real services as processes: a
little real traffic, then each service's /metrics is scraped. Every metric the Grafana dashboard queries
and the issue lists must be exposed, and the ones this traffic produces must carry the values it
produced (an offer accepted, a handling time observed, a contact queued, a webhook refused, an event
dead-lettered). A renamed metric or a gauge nobody refreshes fails here, not on the night it matters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.bus.base import EventBus
from shared.bus.embedded import EmbeddedBus
from shared.bus.kafka import KafkaBus
from shared.topics import CONTACTS
from tests.e2e.conftest import ServiceProcess
from tests.e2e.test_callback_promise import midday_timezone
from tests.e2e.test_contact_to_agent import ROUTER_ENV, contact, register
from tests.shared.test_deploy_monitoring import SELECTOR, queries

Samples = dict[str, list[tuple[dict[str, str], float]]]

# What the issue asks for, by service (the dashboard's names are added from its JSON).
ISSUE_METRICS = {
    "intake": [
        "switchboard_intake_received_total",
        "switchboard_intake_accepted_total",
        "switchboard_intake_rejected_total",
    ],
    "router": [
        "switchboard_bus_events_handled_total",
        "switchboard_bus_handler_failures_total",
        "switchboard_bus_events_dead_lettered_total",
        "switchboard_bus_dlq_size",
        "switchboard_bus_consumer_lag",
        "switchboard_router_offers_total",
        "switchboard_router_waiting_contacts",
        "switchboard_router_waiting_contacts_by_role",
        "switchboard_router_answer_wait_seconds_count",
        "switchboard_router_handling_time_seconds_count",
        "switchboard_router_service_level",
        "switchboard_router_service_level_target",
        "switchboard_router_abandonment_rate",
        "switchboard_router_sales_share",
        "switchboard_router_sales_share_cap",
        "switchboard_router_sales_target",
        "switchboard_router_sales_actual",
        "switchboard_router_goodwill_spent",
        "switchboard_router_goodwill_budget",
    ],
    "callback": [
        "switchboard_callback_promises_today",
        "switchboard_callback_same_day_fulfilment_rate",
        "switchboard_bus_consumer_lag",
        "switchboard_bus_dlq_size",
    ],
}
# Declared on /metrics but with no sample after this short run, and why: a counter with labels has no
# sample until it first counts, a gauge of "nothing configured" or "not measurable yet" has none either.
MAY_BE_EMPTY = {
    "switchboard_bus_handler_failures_total",  # no handler raised: garbage goes to the DLQ without a retry
    "switchboard_router_contacts_abandoned_total",  # nobody hung up
    "switchboard_router_sales_target",  # the default strategy sets no sales target
    "switchboard_router_sales_actual",
    "switchboard_router_goodwill_budget",  # the default strategy's goodwill budget is unlimited
    "switchboard_callback_breaches_unflagged_total",  # nothing broke
}


def scrape(url: str) -> tuple[set[str], Samples]:
    """The metric families a service declares, and every sample it exposes."""
    families: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        families.add(family.name)
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return families, samples


def stack_bus(stack_env: dict[str, str], tmp_path: Path) -> EventBus:
    """The bus the services of this leg share: the embedded log in their data folder, or Kafka."""
    if not stack_env:
        return EmbeddedBus(tmp_path / "bus.sqlite3")
    return KafkaBus(
        stack_env["SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS"],
        partitions=int(stack_env["SWITCHBOARD_KAFKA_PARTITIONS"]),
        topic_prefix=stack_env["SWITCHBOARD_TOPIC_PREFIX"],
    )


def declared(name: str, families: set[str]) -> bool:
    base = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    return name in families or base in families


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def owner(name: str) -> str:
    for service in ("intake", "callback"):
        if name.startswith(f"switchboard_{service}_"):
            return service
    return "router"  # router metrics, and bus metrics (the router consumes the most)


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not met within {timeout}s; last: {last!r}")


async def offer_for(http: httpx.AsyncClient, router: ServiceProcess, headers: dict[str, str], cid: str) -> dict:
    async def one() -> dict | None:
        r = await http.get(f"{router.url}/v1/agents/alice/offers", headers=headers)
        return next((o for o in r.json()["items"] if o["contact_id"] == cid), None)

    deadline = asyncio.get_running_loop().time() + 20
    while (found := await one()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no offer for {cid}"
        await asyncio.sleep(0.05)
    return found


async def test_every_dashboard_and_issue_metric_carries_what_the_services_did(
    services: Callable[..., ServiceProcess], tmp_path: Path, stack_env: dict[str, str]
) -> None:
    intake = services("intake")
    router = services("router", env=ROUTER_ENV)
    callback = services("callback", env={"SWITCHBOARD_CALLBACK_POLL_INTERVAL_SECONDS": "0.2"})
    alice = await register(router, "alice", ["service"])  # voice only: a chat contact waits
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(f"{intake.url}/v1/contacts", content=b"x", headers={"content-type": "text/plain"})
        assert refused.status_code == 415

        served = await http.post(f"{intake.url}/v1/contacts", json=contact("MX-1"))
        assert served.status_code == 202, served.text
        cid = served.json()["contact_id"]
        offer = await offer_for(http, router, alice, cid)
        assert (await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/accept", headers=alice)).status_code == 200
        await asyncio.sleep(0.2)  # a handling time above 0
        r = await http.post(f"{router.url}/v1/contacts/{cid}/complete", headers=alice, json={"resolved": True})
        assert r.status_code == 200, r.text
        r = await http.put(f"{router.url}/v1/agents/alice/status", headers=alice, json={"status": "available"})
        assert r.status_code == 200, r.text

        declined_contact = await http.post(f"{intake.url}/v1/contacts", json=contact("MX-2"))
        assert declined_contact.status_code == 202, declined_contact.text
        offer = await offer_for(http, router, alice, declined_contact.json()["contact_id"])
        r = await http.post(f"{router.url}/v1/offers/{offer['offer_id']}/decline", headers=alice)
        assert r.status_code == 200, r.text

        chat = await http.post(f"{intake.url}/v1/contacts", json=contact("MX-3", channel="chat"))
        assert chat.status_code == 202, chat.text
        form = {"phone": "+4930901822", "timezone": midday_timezone(datetime.now(UTC)), "intent": "support"}
        assert (await http.post(f"{intake.url}/v1/callback-requests", data=form)).status_code == 202

    # Bytes that are no event on the contacts topic, for the DLQ: through the bus the services share.
    bus = stack_bus(stack_env, tmp_path)
    await bus.start()
    try:
        await bus.publish_raw(CONTACTS, "garbage", b"\x00 not an event")
    finally:
        await bus.stop()

    def router_settled() -> Samples | None:
        _, s = scrape(router.url)
        ok = (
            value(s, "switchboard_router_waiting_contacts_by_role", channel="chat") >= 1
            and value(s, "switchboard_router_handling_time_seconds_count") >= 1
            and value(s, "switchboard_bus_dlq_size", topic=CONTACTS) >= 1
        )
        return s if ok else None

    await wait_for(router_settled)
    await wait_for(lambda: value(scrape(callback.url)[1], "switchboard_callback_promises_today", state="promised"))
    scraped = {name: scrape(svc.url) for name, svc in (("intake", intake), ("router", router), ("callback", callback))}

    # 1. Every name the dashboard queries and the issue lists is declared by the service that owns it,
    #    and has samples unless this run could not have produced any.
    wanted = {name: svc for svc, names in ISSUE_METRICS.items() for name in names}
    for expr in queries():
        for name, _ in SELECTOR.findall(expr):
            wanted.setdefault(name, owner(name))
    for name, svc in sorted(wanted.items()):
        families, samples = scraped[svc]
        assert declared(name, families), f"{svc} /metrics does not declare {name}"
        if name not in MAY_BE_EMPTY:
            assert samples.get(name), f"{svc} /metrics has no sample of {name}"

    # 2. The values are the ones this traffic produced.
    _, i = scraped["intake"]
    assert value(i, "switchboard_intake_received_total", endpoint="contacts") >= 4
    assert value(i, "switchboard_intake_accepted_total", endpoint="contacts") >= 3
    assert value(i, "switchboard_intake_rejected_total", endpoint="contacts", reason="unsupported_media_type") == 1
    _, r = scraped["router"]
    assert value(r, "switchboard_router_offers_total", outcome="made") >= 2
    assert value(r, "switchboard_router_offers_total", outcome="accepted") >= 1
    assert value(r, "switchboard_router_offers_total", outcome="declined") >= 1
    assert value(r, "switchboard_router_answer_wait_seconds_count", channel="voice") >= 1
    assert value(r, "switchboard_router_handling_time_seconds_count", channel="voice") >= 1
    assert value(r, "switchboard_router_handling_time_seconds_sum", channel="voice") >= 0.2
    assert value(r, "switchboard_router_waiting_contacts", channel="chat") == 1
    assert value(r, "switchboard_router_waiting_contacts_by_role", channel="chat", role="service") == 1
    assert value(r, "switchboard_router_service_level", channel="voice", definition="answered") == 1.0
    assert value(r, "switchboard_router_service_level_target", channel="voice") == 0.8
    assert value(r, "switchboard_router_abandonment_rate", channel="voice") == 0.0
    assert value(r, "switchboard_router_sales_share_cap") == 0.3
    assert value(r, "switchboard_router_goodwill_spent", role="all") == 0.0
    assert value(r, "switchboard_router_completions_total", channel="voice") >= 1
    assert value(r, "switchboard_bus_events_handled_total", topic=CONTACTS) >= 3
    assert ("router", CONTACTS) in {(lab["group"], lab["topic"]) for lab, _ in r["switchboard_bus_consumer_lag"]}
    if not stack_env:
        assert value(r, "switchboard_bus_dlq_size", topic=CONTACTS) == 1
        assert value(r, "switchboard_bus_events_dead_lettered_total", topic=CONTACTS) == 1
    _, c = scraped["callback"]
    assert value(c, "switchboard_callback_promises_today", state="promised") >= 1
    assert {lab["topic"] for lab, _ in c["switchboard_bus_dlq_size"]} >= {"callbacks", "routing"}
