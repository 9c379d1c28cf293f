"""The ops dashboard in a real browser: headless Debian chromium driven by Playwright, against real
router and intake processes. The page must update live (no reload) when a contact is posted.

Never downloads a browser: it uses the system's ``chromium`` (``apt-get install chromium``) through
``executable_path`` and skips with the reason when that is absent. Screenshots go to
``$SWITCHBOARD_SCREENSHOT_DIR`` (default ``test-artifacts/`` in the checkout) on every run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.e2e.conftest import ROOT, ServiceProcess, midday_sites, midday_zone

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}


def screenshot_dir() -> Path:
    path = Path(os.environ.get("SWITCHBOARD_SCREENSHOT_DIR", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def chromium_path() -> str:
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -r requirements-dev.lock)"
    )
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (tests never download a browser)")
    return CHROMIUM


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess, ServiceProcess]]:
    """Router, intake and callback as real processes sharing the embedded bus in one data directory; the
    router reads today's promises from this callback service."""
    started: list[ServiceProcess] = []
    try:
        # Every promise is at risk from the start (slack always under the threshold), so the dashboard's
        # at-risk list has something to show without waiting for the evening.
        # The site (and the customers below) live where it is noon now: today's promises are for today
        # whenever this runs (near midnight UTC they were rightly for tomorrow, and the test failed).
        sites = {"SWITCHBOARD_SITES_JSON": midday_sites()}
        callback = ServiceProcess(
            "callback", tmp_path, {"SWITCHBOARD_CALLBACK_AT_RISK_SLACK_MINUTES": "100000", **sites}
        ).start()
        started.append(callback)
        router = ServiceProcess("router", tmp_path, {"SWITCHBOARD_ROUTER_CALLBACK_URL": callback.url, **sites}).start()
        started.append(router)
        intake = ServiceProcess("intake", tmp_path, sites).start()
        started.append(intake)
        yield router, intake, callback
    finally:
        for proc in started:
            proc.terminate()


def test_dashboard_updates_live_when_a_contact_arrives(
    chromium_path: str, stack: tuple[ServiceProcess, ServiceProcess, ServiceProcess]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    router, intake, callback = stack
    r = httpx.post(
        f"{router.url}/v1/agents",
        headers=ADMIN,
        json={
            "agent_id": "alice",
            "name": "Alice",
            "roles": ["service"],
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
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{router.url}/ops/dashboard")

            # An agent's token is refused with a reason, and the page asks again.
            page.fill("#token", agent_token)
            page.click("button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("supervisor or admin token")

            page.fill("#token", TEST_ADMIN_TOKEN)
            page.click("button[type=submit]")
            expect(page.get_by_test_id("connection")).to_have_text("live")
            expect(page.get_by_test_id("waiting-total")).to_have_text("0")
            expect(page.locator('#agents tr[data-agent-id="alice"]')).to_contain_text("break")
            expect(page.get_by_test_id("goals")).to_contain_text("never goes to sales first")
            assert page.evaluate("sessionStorage.getItem('switchboard.ops.token')") == TEST_ADMIN_TOKEN
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            r = httpx.post(
                f"{intake.url}/v1/contacts",
                json={
                    "external_id": "browser-1",
                    "source": "web",
                    "channel": "chat",
                    "intent": "support",
                    "customer": {"id": "c-browser", "language": "en"},
                },
            )
            assert r.status_code == 202, r.text

            expect(page.get_by_test_id("waiting-total")).to_have_text("1", timeout=15_000)
            row = page.locator("#waiting tr[data-contact-id]")
            expect(row).to_have_count(1)
            expect(row).to_contain_text("no service agent on duty for chat")
            # Issue 15's figures: alice is on break, so nobody on duty can serve the chat, and it says so.
            expect(page.get_by_test_id("unservable-count")).to_have_text("1")
            expect(page.locator("#unservable-reasons")).to_contain_text("nobody on duty: 1")
            expect(row).to_contain_text("unservable: nobody is on duty at its site")
            expect(page.get_by_test_id("overruns-today")).to_have_text("0")
            expect(page.get_by_test_id("short-sales-today")).to_have_text("0")
            expect(page.locator('#goodwill-by-role tr[data-role="all"]')).to_contain_text("no limit")
            expect(page.get_by_test_id("sales-targets")).to_contain_text("no sales targets")
            expect(page.locator('#coverage-rules tr[data-rule="general"]')).to_be_visible()
            expect(page.get_by_test_id("coverage-warnings").locator("li")).not_to_have_count(0)
            expect(page.locator('#staffing tr[data-channel="chat"][data-role="all"]')).to_be_visible()
            expect(page.locator('#service-level tr[data-channel="chat"]')).to_be_visible()
            assert page.locator('#throughput polyline[data-series="received"]').count() == 1
            assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating live"

            # Today's promises come from the callback service (through the router) and follow it.
            expect(page.locator("#p-promised")).to_have_text("0", timeout=10_000)
            r = httpx.post(
                f"{callback.url}/v1/callbacks",
                headers=ADMIN,
                json={
                    "customer": {"id": "c-promise", "name": "Ada", "phone": "+4930901821", "timezone": midday_zone()}
                },
            )
            assert r.status_code == 201, r.text
            expect(page.locator("#p-promised")).to_have_text("1", timeout=15_000)
            expect(page.locator("#p-open")).to_have_text("1")
            expect(page.locator("#p-at_risk")).to_have_text("1", timeout=15_000)
            risky = page.locator("#at-risk tr[data-callback-id]")
            expect(risky).to_have_count(1)
            expect(risky).to_contain_text("Ada")
            expect(risky).to_contain_text("We will call you back")
            page.screenshot(path=str(screenshot_dir() / "ops-dashboard.png"), full_page=True)
            assert errors == [], errors
        finally:
            browser.close()
