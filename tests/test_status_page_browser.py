"""The status page in real headless Chromium (Debian package, driven over the DevTools
protocol) against a real daemon: a fake host on a loopback address behind a real BMC
(ipmi_sim) and sshd, a healthy host, pages to a real HTTP receiver (PagerDuty's events API).

The NOC's view, step by step: the page reloads itself; the host goes down and an incident
appears; the ladder climbs to level 2 (reset, then power cycle) and dispatches; the operator
acknowledges it with the page's button (the pages are acknowledged in the store and at the
receiver; a wrong token first gets the refusal page with its reason); the host comes back and
the incident clears. A screenshot of the page with the open incident is written to
artifacts/status-page.png (not committed)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from tests.browser import Browser
from tests.daemon_proc import wait_for
from tests.test_scenarios import HOST, Fleet, fleet, ladder, loop, pagerduty  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
TOKEN = "page-t0ken"


async def until(browser: Browser, url: str, expression: str, what: str, timeout: float = 90):
    """Reload ``url`` until ``expression`` (on its DOM; a JSON value) is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        await browser.goto(url)
        value = await browser.js(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            text = await browser.js("document.body.innerText")
            raise AssertionError(f"timed out waiting for {what}; the page says:\n{text}")
        await asyncio.sleep(0.3)


def host_state(name: str) -> str:
    return f"document.querySelector('[data-host=\"{name}\"]')?.dataset.state"


async def test_an_incident_appears_climbs_is_acknowledged_and_clears(fleet: Fleet, loop, HOST, make_ipmi_sim,
                                                                    make_ssh_host, pagerduty, tmp_path):
    bmc = make_ipmi_sim()
    fleet.add("web1", HOST, bmc=bmc, ssh=make_ssh_host(HOST), groups=["web"])
    fleet.add("db1", "127.0.0.1", groups=["db"])
    fleet.top["groups"] = {"web": {}, "db": {}}
    fleet.top["daemon"] = {"state_path": str(fleet.tmp / "state.db"), "metrics_listen": f"127.0.0.1:{fleet.port}",
                           "log_level": "debug", "api_token": fleet.secret("api", TOKEN),
                           "api": {"page_refresh": "5s", "page_lang": "ja"}}
    fleet.top["paging"] = {
        "integrations": {"pd": {"type": "pagerduty", "url": pagerduty.url, "routing_key": fleet.secret("pd", "R" * 32)}},
        "people": {"aoki": {"notify": ["pd"]}},
        "policies": {"ops": {"tiers": [{"targets": ["aoki"], "ack_timeout": "15m"}]}},
        "routes": [{"policy": "ops"}],
    }
    daemon = fleet.start(remediation={"boot_timeout": "10s"})  # each level waits 10 s for the host: time to see it
    page = f"http://127.0.0.1:{fleet.port}/?lang=en"
    async with Browser(tmp_path) as browser:
        await until(browser, page, f"{host_state('web1')} === 'ok' && {host_state('db1')} === 'ok'", "both hosts ok")
        assert await browser.js("document.querySelector('#no-incidents').innerText") == "No open incidents."
        assert await browser.js("document.documentElement.lang") == "en"
        await browser._loaded()  # noqa: SLF001 - the page reloads itself (meta refresh), nobody navigates

        loop.down(HOST)
        incident = await until(browser, page, "document.querySelector('section.incident')?.id", "the incident")
        section = f"#{incident}"
        assert await browser.js(host_state("web1")) == "critical"
        assert await browser.js(host_state("db1")) == "ok"
        assert "web1 / ping" in await browser.js(f"document.querySelector('{section} h3').innerText")

        await until(browser, page, f"document.querySelector('{section}')?.dataset.level === '2'", "level 2")
        done = await browser.js(f"document.querySelector('{section} table.actions').innerText")
        assert "decided\tpower_reset" in done and "done\tpower_reset\tok" in done  # the level-1 reset

        await until(browser, page, f"document.querySelector('{section} form.ack') !== null", "the dispatch page to ack",
                    120)
        assert await browser.js(f"document.querySelector('{section}').dataset.level") == "3"
        sla = await browser.js(f"document.querySelector('{section} table.sla').innerText")
        assert "Engineer on site" in sla
        await browser.goto(page.replace("lang=en", "lang=ja"))  # the default language, for the screenshot
        assert "障害 #" in await browser.js(f"document.querySelector('{section} h3').innerText")
        shot = await browser.screenshot(ARTIFACTS / "status-page.png")
        print(f"status page screenshot: {shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        await browser.goto(page)

        await browser.type_into(f"{section} form.ack input[name=token]", "a guess")
        await browser.click(f"{section} form.ack button")
        assert await browser.js("document.querySelector('#reason').innerText") == "missing or wrong bearer token"
        assert (await browser.js("document.title")).startswith("Refused")
        await browser.goto(page)
        await browser.type_into(f"{section} form.ack input[name=token]", TOKEN)
        await browser.type_into(f"{section} form.ack input[name=by]", "aoki")
        await browser.click(f"{section} form.ack button")
        number = int(incident.removeprefix("incident-"))
        assert await browser.js("location.pathname + location.search") == f"/?lang=en&acked={number}&count=1", \
            await browser.js("document.body.innerText")
        assert await browser.js("document.querySelector('#acked').innerText") == \
            f"Incident #{number}: 1 page(s) acknowledged."
        assert await browser.js(f"document.querySelector('{section} form.ack') === null")
        assert "acknowledged by aoki" in await browser.js(f"document.querySelector('{section} ul.pages').innerText")
        db = sqlite3.connect(f"file:{fleet.tmp / 'state.db'}?mode=ro", uri=True)
        try:
            pages = db.execute("SELECT kind, acked_by FROM pages WHERE incident_id=?", (number,)).fetchall()
        finally:
            db.close()
        assert pages == [("dispatch", "aoki")]
        wait_for(lambda: "acknowledge" in pagerduty.actions(), 30, "the acknowledgement to reach PagerDuty")

        loop.up(HOST)  # the engineer fixed it
        await until(browser, page, "document.querySelector('#no-incidents') !== null", "the incident to clear", 120)
        assert await browser.js(host_state("web1")) == "ok"
        await browser.goto(f"http://127.0.0.1:{fleet.port}/")  # Chromium asks for English (Accept-Language)
        assert await browser.js("document.documentElement.lang") == "en"
        await browser.goto(f"http://127.0.0.1:{fleet.port}/?lang=ja")
        assert "対応中の障害 (0)" in await browser.js("document.body.innerText")
    assert pagerduty.actions() == ["trigger", "acknowledge", "resolve"]
    assert bmc.commands() == ["reset", "off", "on"]
    assert "page dispatch" in ladder(daemon)
