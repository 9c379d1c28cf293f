"""``switchboard demo``: a team, customers and agents, simulated against running services.

Why: a newcomer should see routing, the strategy and the promises work within a minute, on the pages
an operator and an agent would use, without writing a client. Everything goes through the public HTTP
API (intake's webhooks, the router's agent API, the callback ledger), exactly as real systems would, so
the demo also shows how to integrate.

The simulated agents answer offers on their own SSE streams: mostly accept, sometimes decline, then work
the contact for a few seconds and complete it with an outcome that fits the intent (a buyer may buy, an
unhappy customer may get goodwill within the role's budget, a callback reaches the customer or not).
Some voice callers hang up if nobody answers in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

# (agent id, name, roles, capacity, skills): all three roles, so every rule of the default strategy has
# someone to serve it; service agents carry the billing skill the billing rule asks for.
TEAM: tuple[tuple[str, str, list[str], dict[str, int], dict[str, int]], ...] = (
    ("demo-ana", "Ana", ["service"], {"voice": 1, "chat": 2, "web_callback": 1}, {"billing": 3}),
    ("demo-ben", "Ben", ["service"], {"voice": 1, "chat": 2, "web_callback": 1}, {"billing": 3}),
    ("demo-cem", "Cem", ["service"], {"chat": 3, "email": 2}, {"billing": 2}),
    ("demo-dora", "Dora", ["sales"], {"voice": 1, "chat": 1, "web_callback": 1}, {}),
    ("demo-eli", "Eli", ["sales"], {"chat": 2}, {}),
    ("demo-fay", "Fay", ["brand_ambassador"], {"voice": 1, "chat": 1, "web_callback": 1}, {}),
    ("demo-gus", "Gus", ["brand_ambassador", "service"], {"voice": 1, "chat": 2}, {"billing": 1}),
)
# A realistic mix: mostly service questions, some buyers, a few unhappy customers; weights per kind.
CHANNELS = (("voice", 45), ("chat", 40), ("web_callback_request", 10), ("email", 5))
INTENTS = (
    ("question", 30),
    ("support", 20),
    ("billing", 15),
    ("purchase", 15),
    ("complaint", 10),
    ("cancellation", 10),
)
TIERS = (("standard", 80), ("premium", 15), ("vip", 5))
NAMES = ("Ada", "Bo", "Chen", "Dana", "Emre", "Femi", "Gita", "Hugo", "Ines", "Jon", "Kira", "Lars", "Mo", "Noor")
SUMMARIES = {
    "question": "Quick question about opening hours",
    "support": "The app does not sync since the update",
    "billing": "I was charged twice this month",
    "purchase": "I would like to upgrade to the family plan",
    "complaint": "The parcel arrived broken, second time",
    "cancellation": "I want to cancel my contract",
}


def pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


@dataclass
class Tally:
    """What the demo did, for the closing table (the services' own figures are read at the end)."""

    posted: Counter[str] = field(default_factory=Counter)
    callback_requests: int = 0
    offers: int = 0
    accepted: int = 0
    declined: int = 0
    completed: int = 0
    sold: int = 0
    goodwill: float = 0.0
    abandoned: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    answered: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Urls:
    intake: str
    router: str
    callback: str


class Demo:
    def __init__(
        self,
        urls: Urls,
        admin_token: str,
        *,
        rate_per_minute: float,
        handle_seconds: float = 6.0,
        seed: int | None = None,
    ) -> None:
        self.urls = urls
        self.admin = {"Authorization": f"Bearer {admin_token}"}
        self.rate = rate_per_minute
        self.handle_seconds = handle_seconds
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.tokens: dict[str, str] = {}
        self.run_id = f"{int(time.time())}"
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------------------------------------- team

    async def register_team(self, client: httpx.AsyncClient) -> dict[str, str]:
        """Register the team (or give existing demo agents a fresh token) and make them available."""
        for agent_id, name, roles, capacity, skills in TEAM:
            body = {
                "agent_id": agent_id,
                "name": name,
                "roles": roles,
                "languages": ["en", "de"],
                "capacity": capacity,
                "skills": skills,
                "status": "available",
            }
            r = await client.post(f"{self.urls.router}/v1/agents", json=body, headers=self.admin)
            if r.status_code == 201:
                self.tokens[agent_id] = r.json()["token"]
                continue
            if r.status_code != 409:
                raise RuntimeError(f"registering {agent_id}: {r.status_code} {r.text[:300]}")
            r = await client.post(f"{self.urls.router}/v1/agents/{agent_id}/token", headers=self.admin)
            r.raise_for_status()
            self.tokens[agent_id] = r.json()["token"]
            await client.put(
                f"{self.urls.router}/v1/agents/{agent_id}/status", json={"status": "available"}, headers=self.admin
            )
        return self.tokens

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Keep a reference: the event loop holds tasks only weakly, and a collected task never finishes."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------------------ traffic

    async def traffic(self, client: httpx.AsyncClient, duration: float, on_tick: Callable[[], None]) -> None:
        """Poisson arrivals at ``rate`` per minute for ``duration`` seconds."""
        end = time.monotonic() + duration
        n = 0
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(self.rng.expovariate(self.rate / 60.0), end - now))
            if time.monotonic() >= end:
                break
            n += 1
            try:
                await self.one_contact(client, n)
            except httpx.HTTPError as exc:
                self.tally.errors[f"intake: {type(exc).__name__}"] += 1
            on_tick()

    async def one_contact(self, client: httpx.AsyncClient, n: int) -> None:
        rng = self.rng
        kind, intent, tier, name = pick(rng, CHANNELS), pick(rng, INTENTS), pick(rng, TIERS), rng.choice(NAMES)
        phone = f"+4930{rng.randrange(10_000_000, 99_999_999)}"
        if kind == "web_callback_request":
            r = await client.post(
                f"{self.urls.intake}/v1/callback-requests",
                data={
                    "phone": phone,
                    "name": name,
                    "intent": intent,
                    "message": SUMMARIES[intent],
                    "external_id": f"demo-{self.run_id}-{n}",
                },
            )
            if r.status_code == 202:
                self.tally.callback_requests += 1
            else:
                self.tally.errors[f"callback request {r.status_code}"] += 1
            return
        external_id = f"demo-{self.run_id}-{n}"
        r = await client.post(
            f"{self.urls.intake}/v1/contacts",
            json={
                "external_id": external_id,
                "source": "demo",
                "channel": kind,
                "intent": intent,
                "summary": SUMMARIES[intent],
                "customer": {"id": f"cust-{phone[-6:]}", "name": name, "phone": phone, "tier": tier, "language": "en"},
            },
        )
        if r.status_code != 202:
            self.tally.errors[f"contact {r.status_code}"] += 1
            return
        self.tally.posted[kind] += 1
        if kind == "voice":  # a caller's patience: some hang up if nobody answers in time
            contact_id = r.json()["contact_id"]
            self._spawn(self._maybe_hang_up(client, external_id, contact_id, rng.uniform(20, 90)))

    async def _maybe_hang_up(
        self, client: httpx.AsyncClient, external_id: str, contact_id: str, patience: float
    ) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=patience)
            return
        if contact_id in self.tally.answered:
            return
        with contextlib.suppress(httpx.HTTPError):
            r = await client.post(
                f"{self.urls.intake}/v1/contacts/abandoned", json={"external_id": external_id, "source": "demo"}
            )
            if r.status_code == 202:
                self.tally.abandoned += 1

    # ------------------------------------------------------------------------------------------- agents

    async def agent(self, client: httpx.AsyncClient, agent_id: str) -> None:
        """One simulated agent on its own stream; reconnects until the demo stops."""
        headers = {"Authorization": f"Bearer {self.tokens[agent_id]}", "Accept": "text/event-stream"}
        while not self._stop.is_set():
            try:
                async with client.stream(
                    "GET",
                    f"{self.urls.router}/v1/agents/{agent_id}/stream",
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=None),
                ) as resp:
                    event = ""
                    async for line in resp.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data = json.loads(line[5:].strip())
                            await self._on_event(client, agent_id, event, data)
            except (httpx.HTTPError, json.JSONDecodeError):
                await asyncio.sleep(0.5)

    async def _on_event(self, client: httpx.AsyncClient, agent_id: str, event: str, data: Any) -> None:
        if event == "hello":
            for offer in data.get("offers", []):
                self._spawn(self._answer(client, agent_id, offer))
            for work in data.get("assignments", []):
                self._spawn(self._work(client, agent_id, work))
        elif event == "offer":
            self.tally.offers += 1
            self._spawn(self._answer(client, agent_id, data))
        elif event == "assignment":
            self.tally.answered.add(data["contact_id"])
            self._spawn(self._work(client, agent_id, data))

    def _auth(self, agent_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[agent_id]}"}

    async def _answer(self, client: httpx.AsyncClient, agent_id: str, offer: dict[str, Any]) -> None:
        await asyncio.sleep(self.rng.uniform(0.3, 2.0))  # reading the offer
        accept = self.rng.random() < 0.9
        path = "accept" if accept else "decline"
        r = await client.post(
            f"{self.urls.router}/v1/offers/{offer['offer_id']}/{path}",
            headers=self._auth(agent_id),
            json=None if accept else {"reason": "simulated: busy with a colleague"},
        )
        if r.status_code == 200:
            if accept:
                self.tally.accepted += 1
            else:
                self.tally.declined += 1

    async def _work(self, client: httpx.AsyncClient, agent_id: str, work: dict[str, Any]) -> None:
        rng = self.rng
        await asyncio.sleep(rng.uniform(0.5, 1.5) * self.handle_seconds)
        contact, plan = work.get("contact", {}), work.get("plan", {})
        intent = contact.get("intent")
        body: dict[str, Any] = {"resolved": rng.random() < 0.85, "notes": "simulated by switchboard demo"}
        if plan.get("upsell") and intent == "purchase" and rng.random() < 0.6:
            body["sold"] = True
        budget = float(plan.get("goodwill_budget") or 0)
        if budget > 0 and intent in ("complaint", "cancellation") and rng.random() < 0.6:
            body["goodwill_amount"] = round(min(budget, rng.choice((10, 15, 20, 25, 40))), 2)
        if contact.get("callback_id"):
            body["attempt_result"] = rng.choices(("reached", "no_answer", "voicemail"), weights=(75, 15, 10))[0]
        r = await client.post(
            f"{self.urls.router}/v1/contacts/{work['contact_id']}/complete", json=body, headers=self._auth(agent_id)
        )
        if r.status_code == 200:
            self.tally.completed += 1
            self.tally.sold += int(bool(body.get("sold")))
            self.tally.goodwill += float(body.get("goodwill_amount", 0))
        else:
            self.tally.errors[f"complete {r.status_code}"] += 1

    # ---------------------------------------------------------------------------------------------- run

    async def run(
        self,
        duration: float,
        on_tick: Callable[[], None] = lambda: None,
        on_ready: Callable[[dict[str, str]], Awaitable[None] | None] | None = None,
    ) -> dict[str, Any]:
        """Register the team, play traffic for ``duration`` seconds, let agents finish, and return the
        services' own figures for the summary."""
        limits = httpx.Limits(max_connections=len(TEAM) + 40)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:
            await self.register_team(client)
            if on_ready is not None:
                maybe = on_ready(self.tokens)
                if maybe is not None:
                    await maybe
            agents = [asyncio.create_task(self.agent(client, a)) for a in self.tokens]
            try:
                await self.traffic(client, duration, on_tick)
                await asyncio.sleep(min(2 * self.handle_seconds, 10))  # let work in progress finish
            finally:
                self._stop.set()
                pending = [*agents, *self._tasks]
                for task in pending:
                    task.cancel()
                for task in pending:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            return await self.figures(client)

    async def figures(self, client: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get(f"{self.urls.router}/v1/ops/dashboard", headers=self.admin)
            if r.status_code == 200:
                out["dashboard"] = r.json()
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get(f"{self.urls.callback}/v1/summary/today", headers=self.admin)
            if r.status_code == 200:
                out["promises"] = r.json()["overall"]
        return out
