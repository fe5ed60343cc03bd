"""Headless Chromium (the Debian package) driven through the Chrome DevTools Protocol over
aiohttp's websocket client: no browser download, no driver. Enough for page tests: navigate,
read the DOM, type into a field, click like a user, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from pathlib import Path

import aiohttp

from tests.support import Proc, need_binary


class Browser:
    """One headless Chromium with one page (tab); use ``async with``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.proc: Proc | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future] = {}
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "Browser":
        profile = self.tmp / "chromium-profile"
        profile.mkdir()
        argv = [need_binary("chromium"), "--headless", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--window-size=1280,1600", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(2, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = Proc(argv, self.tmp / "chromium.log")
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start:\n{self.proc.output()[-3000:]}")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as answer:
            [page] = [t for t in await answer.json() if t["type"] == "page"]
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._reader:
            self._reader.cancel()
        if self._ws:
            await self._ws.close()
        if self._http:
            await self._http.close()
        if self.proc:
            self.proc.stop()

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            future = self._answers.pop(data.get("id"), None)
            if future is not None:
                future.set_result(data)
            elif "method" in data:
                self._events.put_nowait(data)

    async def send(self, method: str, **params) -> dict:
        """One DevTools command; its result (an error answer fails the test)."""
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._answers[call_id] = future
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 60)
        assert "error" not in answer, f"{method}: {answer['error']}"
        return answer["result"]

    async def _loaded(self) -> None:
        while (await asyncio.wait_for(self._events.get(), 60))["method"] != "Page.loadEventFired":
            pass

    async def goto(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        self._drain()
        await self.send("Page.navigate", url=url)
        await self._loaded()

    def _drain(self) -> None:
        while not self._events.empty():
            self._events.get_nowait()

    async def js(self, expression: str):
        """The value of a DevTools expression in the page (to read the DOM; the page has no script)."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus a field and type ``text`` into it as keyboard input."""
        assert await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "if (!e) return false; e.focus(); return true; })()"), selector
        await self.send("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """Click the middle of an element with the mouse, and wait for the page it leads to."""
        box = await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "if (!e) return null; e.scrollIntoView({block: 'center'}); "
                            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert box, selector
        self._drain()
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        await self._loaded()

    async def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG at ``path``."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
