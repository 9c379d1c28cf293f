"""Issue 15 scenario, audited from the outside: a team in three roles serves a mixed workload with edge
cases (a pushy seller, generous ambassadors, Turkish chats nobody can take), and the strategy's rules
are checked only through the HTTP API (timelines, stats), as an auditor would. Prints a
rule | expected | observed table. In-process (one router, the embedded bus), a few dozen contacts."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from shared.events import Intent, Tier
from tests.router.conftest import ADMIN, Router, contact, eventually, running_router
from tests.router.test_strategy_obeyed import strategy_file

TEAM = {
    "amb1": ["brand_ambassador"],
    "amb2": ["brand_ambassador"],
    "svc1": ["service"],
    "svc2": ["service"],
    "svc3": ["service"],
    "sal1": ["sales"],
    "sal2": ["sales"],
}
PUSHY = "svc1"  # records a sale on everything, short questions included


async def work(router: Router, agent_id: str, headers: dict[str, str], refusals: list[str]) -> None:
    """Accept every offer and complete it at once; ambassadors grant 30 goodwill on complaints."""
    while True:
        for offer in await router.offers_of(agent_id, headers):
            r = await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=headers)
            if r.status_code != 200:
                continue
            intent = offer["contact"]["intent"]
            outcome: dict[str, Any] = {"sold": intent == "purchase" or agent_id == PUSHY}
            if intent == "complaint" and offer["plan"]["goodwill_budget"] >= 30:
                outcome["goodwill_amount"] = 30
            url = f"/v1/contacts/{offer['contact_id']}/complete"
            r = await router.client.post(url, json=outcome, headers=headers)
            if r.status_code == 422 and "period budget" in r.text:
                refusals.append(offer["contact_id"])
                r = await router.client.post(url, json={**outcome, "goodwill_amount": 0}, headers=headers)
            assert r.status_code == 200, r.text
        await asyncio.sleep(0.05)


async def test_the_strategy_is_obeyed_as_an_auditor_sees_it(tmp_path: Path) -> None:
    strategy = strategy_file(tmp_path, goodwill={"period_budget": 100})
    intents = [Intent.COMPLAINT, Intent.QUESTION, Intent.PURCHASE, Intent.SUPPORT, Intent.BILLING]
    workload = [
        contact(f"a{i}", intent=intents[i % len(intents)], tier=Tier.VIP if i % 7 == 0 else Tier.STANDARD)
        for i in range(40)
    ]
    turkish = [contact(f"tr{i}", language="tr") for i in range(2)]
    async with running_router(tmp_path / "data", strategy_path=strategy) as router:
        headers = {}
        for agent_id, roles in TEAM.items():
            _, headers[agent_id] = await router.register(
                agent_id, roles=roles, skills={"billing": 3}, capacity={"chat": 1}
            )
        refusals: list[str] = []
        workers = [asyncio.create_task(work(router, a, h, refusals)) for a, h in headers.items()]
        try:
            for c in workload + turkish:
                await router.emit(c)

            async def all_done() -> bool:
                stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
                return stats["today"].get("completed", 0) == len(workload)

            await eventually(all_done, timeout=60)
        finally:
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await w
        timelines = {c.contact_id: await router.timeline(c.contact_id) for c in workload + turkish}
        stats = (await router.client.get("/v1/stats", headers=ADMIN)).json()
        queue = (await router.client.get("/v1/queue", headers=ADMIN)).json()["items"]

    def first_offer(cid: str) -> dict[str, Any]:
        return next(e for e in timelines[cid] if e["kind"] == "offered")

    offers = [e for c in workload for e in timelines[c.contact_id] if e["kind"] == "offered"]
    questions = [c for c in workload if c.intent is Intent.QUESTION]
    budgets = {"brand_ambassador": 50, "service": 0, "sales": 0}
    sold_on_questions = sum(1 for c in questions if first_offer(c.contact_id)["agent_id"] == PUSHY)
    grants = [
        e["outcome"]["goodwill_amount"]
        for c in workload
        for e in timelines[c.contact_id]
        if e["kind"] == "completed" and e["outcome"]["goodwill_amount"]
    ]
    rows = [
        (
            "short questions never offered to sales first",
            0,
            sum(1 for c in questions if first_offer(c.contact_id)["explanation"]["role"] == "sales"),
        ),
        (
            "no upsell flag on a short question",
            0,
            sum(
                1
                for c in questions
                for e in timelines[c.contact_id]
                if e["kind"] == "offered" and e["explanation"]["upsell"]
            ),
        ),
        (
            "no upsell flag for brand ambassadors",
            0,
            sum(1 for e in offers if e["explanation"]["role"] == "brand_ambassador" and e["explanation"]["upsell"]),
        ),
        (
            "offer goodwill budget = the offered role's",
            0,
            sum(1 for e in offers if e["explanation"]["goodwill_budget"] != budgets[e["explanation"]["role"]]),
        ),
        ("goodwill spent within the period budget (<= 100)", True, stats["goodwill"]["spent"] <= 100),
        # offers show what the period has left, so ambassadors stop at 3 grants of 30 (a 4th is refused)
        ("goodwill grants of 30 recorded (budget 100)", 3, len(grants)),
        (
            "sales on short questions flagged",
            sold_on_questions,
            stats["strategy_deviations_today"]["sales_on_short_questions"],
        ),
        (
            "Turkish chats flagged unservable (language)",
            2,
            sum(
                1
                for c in turkish
                for e in timelines[c.contact_id]
                if e["kind"] == "unservable" and e["reason"] == "language"
            ),
        ),
        (
            "Turkish chats never offered",
            0,
            sum(1 for c in turkish for e in timelines[c.contact_id] if e["kind"] == "offered"),
        ),
        ("queue shows why they wait", ["language", "language"], [i["unservable_reason"] for i in queue]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'rule':<{width}} | expected | observed")
    for rule, expected, observed in rows:
        print(f"{rule:<{width}} | {expected!s:<8} | {observed}")
    failed = [r for r in rows if r[1] != r[2]]
    assert not failed, failed
