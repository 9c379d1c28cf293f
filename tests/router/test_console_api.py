"""The agent console's page and its one extra call: who the token's agent is, and its goals in words."""

from __future__ import annotations

from tests.router.conftest import ADMIN, Router


async def test_console_page_is_static_and_self_contained(router: Router) -> None:
    r = await router.client.get("/agent")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "http://" not in r.text and "https://" not in r.text  # no CDN
    assert "/v1/console/me" in r.text and "sessionStorage" in r.text


async def test_me_gives_the_agent_its_roles_leeway_in_plain_words(router: Router) -> None:
    _, ann = await router.register("ann", roles=["brand_ambassador"])
    r = await router.client.get("/v1/console/me", headers=ann)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["agent"]["agent_id"] == "ann"
    [leeway] = body["leeway"]
    assert leeway["role"] == "brand ambassador" and leeway["goodwill_budget"] == 50
    assert "15 min per contact" in leeway["text"] and "goodwill up to 50" in leeway["text"]
    assert any("never goes to sales first" in g["text"] for g in body["goals"])

    _, sam = await router.register("sam", roles=["sales", "service"])
    texts = [lw["text"] for lw in (await router.client.get("/v1/console/me", headers=sam)).json()["leeway"]]
    assert len(texts) == 2 and "no goodwill" in texts[0] and "never to a short question" in texts[0]


async def test_me_needs_an_agent_token(router: Router) -> None:
    assert (await router.client.get("/v1/console/me")).status_code == 401
    r = await router.client.get("/v1/console/me", headers=ADMIN)
    assert r.status_code == 403 and "/ops/dashboard" in r.json()["detail"]


async def test_me_counts_the_agents_own_and_team_figures_this_shift(router: Router) -> None:
    from tests.router.conftest import contact

    _, ann = await router.register("ann", roles=["service"], team="blue")
    await router.register("bob", roles=["service"], team="blue", status="break")
    await router.register("cy", roles=["service"], team="red", status="break")
    await router.emit(contact("f1"))
    offer = await router.wait_offer("ann", ann)
    assert (await router.client.post(f"/v1/offers/{offer['offer_id']}/accept", headers=ann)).status_code == 200
    r = await router.client.post(
        f"/v1/contacts/{offer['contact_id']}/complete", json={"resolved": True, "sold": False}, headers=ann
    )
    assert r.status_code == 200, r.text
    figures = (await router.client.get("/v1/console/me", headers=ann)).json()["figures"]
    assert figures["team"] == "blue" and figures["team_figures"]["agents"] == 2  # cy is in another team
    assert figures["own"]["completed"] == 1 and figures["own"]["resolved"] == 1 and figures["own"]["sold"] == 0
    assert figures["own"]["over_time_allowed"] == 0 and figures["own"]["average_handling_seconds"] is not None
    assert figures["team_figures"]["completed"] == 1
    assert "chat" in figures["service_level"] or "voice" in figures["service_level"]
