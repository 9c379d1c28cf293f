"""The agent console in a real browser (headless Debian chromium via Playwright) against real router and
intake processes: sign in with the agent's token, change status, see an offer arrive live on the stream,
accept it and complete it with an outcome, all without a page reload. Saves a screenshot each run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ServiceProcess, midday_zone, wait_until
from tests.e2e.test_dashboard_browser import ADMIN, chromium_path, screenshot_dir, stack  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def test_midday_zone_is_about_noon() -> None:
    from zoneinfo import ZoneInfo

    for hour in range(24):
        now = datetime(2026, 12, 5, hour, 40, tzinfo=UTC)
        assert now.astimezone(ZoneInfo(midday_zone(now))).hour == 12


def test_an_agent_works_a_contact_through_the_console(
    chromium_path: str,  # noqa: F811
    stack: tuple[ServiceProcess, ServiceProcess, ServiceProcess],  # noqa: F811
) -> None:
    from playwright.sync_api import expect, sync_playwright

    router, intake, callback = stack
    r = httpx.post(
        f"{router.url}/v1/agents",
        headers=ADMIN,
        json={
            "agent_id": "bea",
            "name": "Bea",
            "roles": ["brand_ambassador"],
            "languages": ["en"],
            "capacity": {"chat": 1},
            "status": "break",
        },
    )
    assert r.status_code == 201, r.text
    agent_token = r.json()["token"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000}, timezone_id="UTC")
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{router.url}/agent")

            page.fill("#token", TEST_ADMIN_TOKEN)  # the admin has no console: refused with the reason
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("agent's token")

            page.fill("#token", agent_token)
            page.click("button[type=submit]")
            expect(page.get_by_test_id("connection")).to_have_text("live")
            expect(page.get_by_test_id("status")).to_have_text("break")
            expect(page.get_by_test_id("leeway")).to_contain_text("goodwill up to 50 per contact")
            expect(page.get_by_test_id("goals")).to_contain_text("never goes to sales first")
            page.evaluate("window.__sameDocument = true")

            page.click('#status-buttons button[data-status="available"]')
            expect(page.get_by_test_id("status")).to_have_text("available")

            r = httpx.post(
                f"{intake.url}/v1/contacts",
                json={
                    "external_id": "console-1",
                    "source": "web",
                    "channel": "chat",
                    "intent": "complaint",
                    "summary": "parcel arrived broken",
                    "customer": {"id": "c-console", "name": "Carla", "language": "en"},
                },
            )
            assert r.status_code == 202, r.text

            offer = page.locator("#offers [data-offer-id]")
            expect(offer).to_have_count(1, timeout=15_000)
            expect(offer).to_contain_text("Carla")
            expect(offer).to_contain_text("rule unhappy customer")
            expect(offer).to_contain_text("left")  # the countdown runs
            page.screenshot(path=str(screenshot_dir() / "agent-console-offer.png"), full_page=True)
            offer.locator("button.accept").click()

            work = page.locator("#assignments [data-contact-id]")
            expect(work).to_have_count(1, timeout=10_000)
            expect(offer).to_have_count(0)
            # Status apart from work: the agent's own choice stays, the router's view of their work moves.
            expect(page.get_by_test_id("activity")).to_have_text("on contact")
            expect(page.get_by_test_id("status")).to_have_text("available")
            contact_id = work.get_attribute("data-contact-id")
            work.locator('input[name="goodwill_amount"]').fill("20")
            work.locator('textarea[name="notes"]').fill("replacement sent, 20 credit")
            page.screenshot(path=str(screenshot_dir() / "agent-console.png"), full_page=True)
            work.locator("button[type=submit]").click()

            expect(page.get_by_test_id("last-outcome")).to_contain_text("Completed Carla: resolved, goodwill 20")
            expect(work).to_have_count(0)
            # Own figures this shift follow the completion: one contact, goodwill 20, against the goals.
            own = page.locator('#figures tr[data-who="you"] td')
            expect(own.nth(1)).to_have_text("1", timeout=10_000)
            expect(own.nth(4)).to_have_text("20")
            expect(page.locator("#team-sl")).to_contain_text("goal 80 %")
            page.screenshot(path=str(screenshot_dir() / "agent-console-done.png"), full_page=True)

            # The next customer cannot be helped now: the agent promises a callback in a window.
            r = httpx.post(
                f"{intake.url}/v1/contacts",
                json={
                    "external_id": "console-2",
                    "source": "web",
                    "channel": "chat",
                    "intent": "cancellation",
                    "customer": {
                        "id": "c-console-2",
                        "name": "Dmitri",
                        "phone": "+4930901822",
                        "language": "en",
                        "timezone": midday_zone(),  # any hour this runs, the window typed below is today
                    },
                },
            )
            assert r.status_code == 202, r.text
            # Wrap-up runs, then ends by itself, and the waiting customer is offered at once (the same
            # tick may end the wrap-up and offer, so "idle" need not show in between).
            expect(page.get_by_test_id("activity")).to_have_text("wrap up")
            expect(page.get_by_test_id("activity")).to_have_text("offered", timeout=30_000)
            expect(page.get_by_test_id("status")).to_have_text("available")
            expect(offer).to_have_count(1, timeout=15_000)
            offer.locator("button.accept").click()
            expect(work).to_have_count(1, timeout=10_000)
            start = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
            end = start + timedelta(hours=1)
            work.locator('input[name="callback_promised"]').check()
            work.locator('input[name="cb_start"]').fill(start.strftime("%Y-%m-%dT%H:%M"))
            work.locator('input[name="cb_end"]').fill(end.strftime("%Y-%m-%dT%H:%M"))
            work.locator("button[type=submit]").click()
            expect(page.get_by_test_id("last-outcome")).to_contain_text("Completed Dmitri: resolved, callback promised")
            assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
            assert errors == [], errors
        finally:
            browser.close()

    # The router recorded what the page sent, not just what it displayed.
    def completed() -> dict | None:  # type: ignore[type-arg]
        events = httpx.get(f"{router.url}/v1/contacts/{contact_id}/timeline", headers=ADMIN).json()["events"]
        return next((e for e in events if e["kind"] == "completed"), None)

    done = wait_until(completed)
    assert done is not None

    # The promise reached the callback service with the window the agent typed, in the agent's name.
    def promised() -> list[dict]:  # type: ignore[type-arg]
        r = httpx.get(f"{callback.url}/v1/callbacks", params={"customer_id": "c-console-2"}, headers=ADMIN)
        return r.json()  # type: ignore[no-any-return]

    [promise] = wait_until(promised)
    assert promise["promised_by_agent_id"] == "bea"
    assert promise["window"] is not None
    assert datetime.fromisoformat(promise["window"]["start"]) == start
