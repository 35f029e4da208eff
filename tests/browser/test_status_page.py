"""The status page in a real browser: Debian's headless Chromium, driven by Playwright, against a real
sidecar subprocess with its breakers in a real Redis and an upstream that fails on demand.

Playwright is only the driver: the browser is ``/usr/bin/chromium`` (``.ci/run`` installs the
``chromium`` package), never one ``playwright install`` would download. Without that binary these
tests skip. Screenshots of each state go to ``test-artifacts/`` (not committed).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest

from tests.processes import SidecarProcess

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright (the test extras)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-admin-token"
MESSAGES = "/twilio/2010-04-01/Accounts/AC123/Messages.json"
SMS = "twilio/twilio_sms"
UPSTREAMS = {
    "twilio": {"prefix": "/twilio", "breaker": {"consecutive_failures": 3, "open_for": "5m", "jitter": 0},
               "rate_limits": [{"name": "per-org", "key": "org", "limit": 1000, "per": "1h"}],
               "routes": [{"name": "twilio_sms", "methods": ["POST"],
                           "path": "/2010-04-01/Accounts/{account}/Messages.json"}]},
    "google": {"prefix": "/google", "routes": [{"name": "google_calendar_freebusy", "methods": ["POST"],
                                                 "path": "/calendar/v3/freeBusy"}]},
}


class Page:
    """One browser tab on the status page, with every console message and CSP violation it reported."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        self.violations: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    async def open(self, url: str) -> None:
        await self.page.expose_function("reportViolation", lambda text: self.violations.append(text))
        await self.page.add_init_script(
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.reportViolation(`${e.violatedDirective} ${e.blockedURI}`));")
        await self.page.goto(url)
        await self.state(SMS, "closed")

    def row(self, breaker: str) -> Any:
        return self.page.locator(f'#routes tr[data-breaker="{breaker}"]')

    async def state(self, breaker: str, state: str, timeout: float = 5.0) -> float:
        """Wait until the page shows ``breaker`` in ``state``; the seconds it took."""
        started = time.monotonic()
        await self.page.wait_for_selector(f'#routes tr[data-breaker="{breaker}"][data-state="{state}"]',
                                          timeout=timeout * 1000)
        return time.monotonic() - started

    async def act(self, breaker: str, action: str, token: str | None) -> str:
        """Click ``action`` on ``breaker``'s row, answer the dialog with ``token``; the notice shown."""
        await self.page.locator("#notice").evaluate("(n) => { n.hidden = true; n.textContent = ''; }")
        await self.row(breaker).locator(f'button[data-action="{action}"]').click()
        await self.page.wait_for_selector("dialog#confirm[open]")
        await self.page.fill("#token-input", token or "")
        await self.page.click("#confirm-ok")
        notice = self.page.locator("#notice")
        await notice.wait_for(state="visible")
        return str(await notice.text_content())

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"status-page-{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        """No CSP violation, and nothing in the console that mentions the policy."""
        assert self.violations == []
        assert [m for m in self.console if "Content Security Policy" in m or "Refused to" in m] == []


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def sidecar(tmp_path: Path, redis_url: str, scripted) -> AsyncIterator[SidecarProcess]:  # type: ignore[no-untyped-def]
    _, url = scripted
    upstreams = {name: {**settings, "url": url} for name, settings in UPSTREAMS.items()}
    process = SidecarProcess(tmp_path, upstreams, admin_token=TOKEN,
                             state={"backend": "redis", "redis_url": redis_url, "redis_timeout": "250ms"})
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


async def open_page(browser: Any, sidecar: SidecarProcess, width: int = 1100, height: int = 800) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = Page(await context.new_page())
    await page.open(sidecar.admin_url + "/")
    return page


async def fail_sms(sidecar: SidecarProcess, times: int = 3) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(times):
            async with http.post(sidecar.url + MESSAGES, data={"To": "+15550001111", "Body": "hi"},
                                 headers={"X-Org-Id": "acme"}) as response:
                assert response.status == 503


class Relay:
    """A TCP relay on a free loopback port to the admin port, whose connections :meth:`cut` drops at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0
        self._transports: list[asyncio.WriteTransport] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports += [writer.transport, target_writer.transport]  # type: ignore[list-item]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pump(reader, target_writer), pump(target_reader, writer))


def stored_state(redis_server: Any, breaker: str = SMS) -> str | None:
    with redis_server.client() as client:
        return client.hget(f"rp:{{{breaker}}}:breaker", "state")  # type: ignore[no-any-return]


async def test_an_opening_shows_within_2s_without_a_reload_and_reset_with_the_token_closes_it(
    browser: Any, sidecar: SidecarProcess, scripted, redis_server: Any
) -> None:  # type: ignore[no-untyped-def]
    upstream, _ = scripted
    page = await open_page(browser, sidecar)
    await page.shot("1-closed")
    navigations: list[str] = []
    page.page.on("framenavigated", lambda frame: navigations.append(frame.url))

    upstream.status = 503
    await fail_sms(sidecar)
    took = await page.state(SMS, "open", timeout=2.0)
    assert took < 2.0
    text = str(await page.row(SMS).text_content())
    assert re.search(r"probe in (5m|4m \d+s)", text) and "3 consecutive failures" in text, text
    first = page.page.locator("#transitions li").first
    assert "closed → open" in str(await first.text_content())
    assert (await first.locator(".when").text_content() or "").endswith("s ago")
    await page.shot("2-open")

    upstream.status = 200
    notice = await page.act(SMS, "reset", TOKEN)
    assert notice.startswith("Done: open → closed"), notice
    await page.state(SMS, "closed", timeout=2.0)
    assert stored_state(redis_server) == "closed", "the fleet's state, in Redis, says closed"
    assert await page.page.evaluate("sessionStorage.getItem('resilience-proxy.admin-token')") == TOKEN
    assert await page.page.context.cookies() == [], "the token is never a cookie"
    assert navigations == [], "no reload, no navigation: the token never travels in a URL"
    assert "admin token set for this tab" in str(await page.page.locator("#mode").text_content())
    await page.shot("3-reset")
    page.assert_clean()


async def test_without_the_token_the_buttons_are_refused(
    browser: Any, sidecar: SidecarProcess, scripted, redis_server: Any
) -> None:  # type: ignore[no-untyped-def]
    upstream, _ = scripted
    page = await open_page(browser, sidecar)
    assert "read-only" in str(await page.page.locator("#mode").text_content())
    upstream.status = 503
    await fail_sms(sidecar)
    await page.state(SMS, "open")

    notice = await page.act(SMS, "reset", None)
    assert notice.startswith("Refused (401)"), notice
    notice = await page.act(SMS, "disable", "not-the-token")
    assert notice.startswith("Refused (401)"), notice
    assert await page.page.evaluate("sessionStorage.getItem('resilience-proxy.admin-token')") is None, \
        "a refused token is forgotten"
    status = await page.page.evaluate(
        "fetch('/admin/breakers/twilio/twilio_sms/reset', {method: 'POST'}).then((r) => r.status)")
    assert status == 401
    window = page.page.locator("#window")  # the seconds the traffic covers: one more with each stats
    shown, deadline = await window.text_content(), time.monotonic() + 5
    while await window.text_content() == shown:  # (wait_for_function would need the eval the CSP forbids)
        assert time.monotonic() < deadline, "no stats for 5 s"
        await asyncio.sleep(0.05)
    await page.state(SMS, "open", timeout=0.1)  # fresh stats from the sidecar: still open
    assert stored_state(redis_server) == "open"
    await page.shot("4-refused")
    page.assert_clean()


async def test_the_stream_dropping_and_coming_back(
    browser: Any, sidecar: SidecarProcess, scripted, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    upstream, _ = scripted
    page = await open_page(browser, sidecar)

    # The connection drops (a proxy or port-forward in between restarts): the page says so, reconnects.
    async with Relay(sidecar.admin_port) as relay:
        await page.page.goto(f"http://127.0.0.1:{relay.port}/")
        await page.state(SMS, "closed")
        relay.cut()
        await page.page.wait_for_selector("#connection.pill-bad", timeout=5000)
        await page.page.wait_for_selector("#connection.pill-ok", timeout=10000)
        assert relay.connections >= 2, "the page opened a new stream"
        upstream.status = 503
        await fail_sms(sidecar)
        await page.state(SMS, "open", timeout=2.0)
        upstream.status = 200
        await page.act(SMS, "reset", TOKEN)
        await page.state(SMS, "closed", timeout=2.0)
    await page.page.goto(sidecar.admin_url + "/")
    await page.state(SMS, "closed")
    first_pid = await page.page.locator("#pid").text_content()

    # The sidecar's admin side dies (SIGKILL) and another process comes up on the same ports, with the
    # breaker opened meanwhile by the fleet: the page follows without a reload.
    sidecar.process.kill()
    sidecar.process.wait()
    await page.page.wait_for_selector("#connection.pill-bad", timeout=5000)
    await page.shot("5-reconnecting")
    (tmp_path / "second").mkdir()
    replacement = SidecarProcess(tmp_path / "second", {}, config=(sidecar.config, sidecar.port, sidecar.admin_port))
    try:
        await replacement.wait_ready()
        upstream.status = 503
        await fail_sms(replacement)
        await page.page.wait_for_selector("#connection.pill-ok", timeout=10000)
        await page.state(SMS, "open", timeout=5.0)
        assert await page.page.locator("#pid").text_content() == str(replacement.process.pid) != first_pid
        await page.shot("6-reconnected")
        page.assert_clean()
    finally:
        replacement.stop()


@pytest.mark.parametrize(("name", "width", "height"), [("laptop", 1280, 800), ("small-laptop", 1024, 700),
                                                       ("phone", 390, 844)])
async def test_readable_on_a_laptop_and_a_phone(
    browser: Any, sidecar: SidecarProcess, scripted, name: str, width: int, height: int
) -> None:  # type: ignore[no-untyped-def]
    upstream, _ = scripted
    page = await open_page(browser, sidecar, width, height)
    upstream.status = 503
    await fail_sms(sidecar)
    await page.state(SMS, "open")
    overflow = await page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px wider than the {name}'s screen"
    header_shown = await page.page.locator("#routes thead").is_visible()
    assert header_shown == (name != "phone"), "on a phone each row is a card, each cell labelled"
    await page.shot(f"7-{name}")
    page.assert_clean()

