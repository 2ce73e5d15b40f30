"""`detpack store serve` fits the window (issue 35, item 6): every page of the dashboard over a real
chain, laid out by real headless Chromium at 1280x900 (desktop) and 390x844 (phone), has no
horizontal overflow: the document is no wider than the window and no element reaches past its right
edge unless it sits inside a box that scrolls sideways on its own (a wide table). Chromium is
driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-terminated JSON,
commands on fd 3, replies on fd 4), so no port is opened; each layout is also screenshotted."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import struct
import subprocess
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import Any

import pytest
from test_store import isolated_home  # noqa: F401 - the fixture
from test_store_serve import chain, served  # noqa: F401 - the fixtures

from conftest import headless_chromium
from detpack.serve import Dashboard

pytestmark = pytest.mark.integration

#: (name, width, height, mobile) of each window the pages must fit.
WINDOWS = (("desktop", 1280, 900, False), ("phone", 390, 844, True))

#: What overflows: the document's scroll width, and every element whose right edge passes the
#: window's, unless an ancestor (below <body>) clips or scrolls sideways. Returned by value.
MEASURE = """(() => {
  const root = document.documentElement;
  const width = root.clientWidth;
  const scroller = (el) => {
    for (let p = el.parentElement; p && p !== document.body && p !== root; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") return true;
    }
    return false;
  };
  const past = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > width + 0.5 && !scroller(el)) {
      past.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + el.className : "")
        + " right=" + Math.round(box.right));
    }
  }
  return {scrollWidth: root.scrollWidth, clientWidth: width, innerWidth: window.innerWidth, past: past.slice(0, 8),
          loaded: document.readyState === "complete" ? location.href : ""};
})()"""


class Devtools:
    """Headless Chromium under the DevTools protocol on a pipe, every read bounded by ``timeout``."""

    def __init__(self, argv: list[str], log: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.log = log
        self._next = 0
        self._buffer = b""
        commands_r, self._commands = os.pipe()
        self._replies, replies_w = os.pipe()
        # The child needs them as fds 3 and 4 exactly; pass_fds keeps numbers, it does not move them,
        # and closes everything unlisted after preexec_fn runs. So park them above 10 (no clash with
        # 3 or 4), dup2 them into place in the child (dup2 clears close-on-exec) and keep close_fds
        # off: every other descriptor Python opened is non-inheritable (PEP 446) and still closes.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, replies_w)]
        for fd in (commands_r, replies_w):
            os.close(fd)

        def place() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [*argv, "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, close_fds=False, preexec_fn=place,
            )  # fmt: skip
        for fd in high:
            os.close(fd)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result, skipping the events that arrive meanwhile."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data) :]
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                assert "error" not in reply, f"{method}: {reply['error']}"
                result: dict[str, Any] = reply["result"]
                return result

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(left, 0))
            assert ready, f"no DevTools reply within {self.timeout}s: {self.stderr()}"
            chunk = os.read(self._replies, 1 << 20)
            assert chunk, f"Chromium closed the DevTools pipe (exit {self.process.poll()}): {self.stderr()}"
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        os.close(self._commands)
        os.close(self._replies)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking every chunk's CRC and inflating its pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, pixels, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        header = body if kind == b"IHDR" else header
        pixels += body if kind == b"IDAT" else b""
        at += 12 + length
        if kind == b"IEND":
            break
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    assert len(zlib.decompress(pixels)) == height * (1 + (width * channels * depth + 7) // 8)
    return width, height


def test_every_page_fits_a_desktop_and_a_phone_window(
    served: tuple[str, Dashboard],  # noqa: F811 - the fixture
    chain: dict[str, str],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    base, dashboard = served
    dashboard.verification(wait=60)  # the banner as it stays: the long "Verified: ..." line
    pages = {
        "environments": "/",
        "log": "/log",
        "env-prod": "/env/prod",
        "env-staging-at": "/env/staging?at=2000-01-01",
        "item-image": f"/item/sha256:{chain['image']}",
        "item-wheel": f"/item/sha256:{chain['wheel']}",
        "search": "/search?q=" + urllib.parse.quote("fx_flit"),
        "search-digest": f"/search?q={chain['layer']}",
        "verification": "/verify",
    }
    chromium = Devtools(headless_chromium(tmp_path / "profile"), tmp_path / "chromium.log")
    overflows: list[str] = []
    try:
        target = chromium.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chromium.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for window, width, height, mobile in WINDOWS:
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
            chromium.call("Emulation.setDeviceMetricsOverride", metrics, session)
            for name, path in pages.items():
                url = base + path
                chromium.call("Page.navigate", {"url": url}, session)
                deadline = time.monotonic() + 30
                while True:  # static pages, no script: loaded once readyState is complete at this URL
                    evaluated = chromium.call(
                        "Runtime.evaluate", {"expression": MEASURE, "returnByValue": True}, session
                    )
                    # Mid-navigation the old document may be torn down under the script: try again.
                    measured = evaluated["result"].get("value") or {"loaded": "", "error": evaluated}
                    if measured["loaded"] == url or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert measured["loaded"] == url, f"{url} did not load: {measured} {chromium.stderr()}"
                # A phone zooms out to show a too-wide page; the window must stay as wide as asked.
                zoomed_out = measured["innerWidth"] != width or measured["clientWidth"] > width
                if zoomed_out or measured["scrollWidth"] > measured["clientWidth"] or measured["past"]:
                    overflows.append(f"{window} {path}: {measured}")
                shot = chromium.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
                png = tmp_path / f"{window}-{name}.png"
                png.write_bytes(base64.b64decode(shot))
                assert png_size(png.read_bytes()) == (width, height)
    finally:
        chromium.close()
    assert not overflows, "\n".join(overflows)
