"""A real browser: headless Chromium, a page on another loopback origin, ``fetch``.

Chromium (Debian's ``chromium``) is driven by Selenium through Debian's
``chromium-driver``, both installed by ``python3 scripts/dev.py test``. The page is
served from its own origin (another port on 127.0.0.1) and calls the shim with
``fetch``, as a web app would:

* from an origin given to ``--cors-origin``, the preflight passes, the audio arrives,
  and an ``<audio>`` element plays it: the page reports ``audio.duration``, which must
  be the length of what was spoken, and the ``x-request-id`` the CORS rules expose;
* from any other origin, the call fails in the page (its preflight is refused), a
  ``text/plain`` POST that needs no preflight is refused too, and the mock's journal
  shows no generation at all.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from mockserver import BackgroundServer
from shim.testing import MockUpstream, ShimServer

TEXT = "Hello from a web page, through the shim."
#: The mock speaks at 15 characters a second (mockserver.audio.speech_duration).
SPOKEN_SECONDS = len(TEXT) / 15
SPEECH = {"model": "tts-1", "voice": "coral", "input": TEXT, "response_format": "mp3"}
#: Seconds the page gets to fetch, play and report.
LIMIT = 60

#: The page: it calls the shim named in its query string (``?shim=...``) and leaves
#: what happened in ``window.report``.
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tts-shim from a web page</title></head>
<body><script>
const SHIM = new URLSearchParams(location.search).get("shim");
const SPEECH = __SPEECH__;
window.report = null;
async function speak() {
  const result = {};
  try {
    const response = await fetch(SHIM + "/v1/audio/speech", {
      method: "POST",
      headers: {"content-type": "application/json", "authorization": "Bearer page-key"},
      body: JSON.stringify(SPEECH),
    });
    result.status = response.status;
    result.requestId = response.headers.get("x-request-id");
    const audio = new Audio(URL.createObjectURL(await response.blob()));
    audio.muted = true;
    await audio.play();
    result.playing = !audio.paused;
    result.duration = audio.duration;
  } catch (error) {
    result.error = String(error);
  }
  try {
    // A "simple" request: browsers send it without asking first (no preflight).
    await fetch(SHIM + "/v1/audio/speech", {
      method: "POST", mode: "no-cors",
      headers: {"content-type": "text/plain"}, body: JSON.stringify(SPEECH),
    });
    result.simpleSent = true;
  } catch (error) {
    result.simpleError = String(error);
  }
  window.report = result;
}
speak();
</script></body></html>
""".replace("__SPEECH__", json.dumps(SPEECH))


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "this test needs a real Chromium and its driver: Debian's chromium and "
            "chromium-driver (python3 scripts/dev.py test installs them)",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile; never online."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def page_origin() -> Iterator[str]:
    """The page, served from a loopback origin of its own: that origin."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(_PAGE)

    with BackgroundServer(Starlette(routes=[Route("/", page)])) as server:
        yield str(server.url)


def _visit(browser: Any, page_origin: str, shim: ShimServer) -> dict[str, Any]:
    """Open the page, pointed at ``shim``; what it reported."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{page_origin}/?{urlencode({'shim': shim.url})}")
    report: dict[str, Any] = WebDriverWait(browser, LIMIT).until(
        lambda b: b.execute_script("return window.report")
    )
    return report


def _generations(mock: MockUpstream) -> list[str]:
    return [e["json"]["text"] for e in mock.journal if e["route"] == "tts"]


def test_a_page_on_an_allowed_origin_gets_audio_that_plays(
    browser: Any,
    page_origin: str,
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
) -> None:
    shim = tts_shim_factory(cors_origins=(page_origin,))

    report = _visit(browser, page_origin, shim)

    assert "error" not in report, report
    assert report["status"] == 200
    assert report["playing"] is True
    assert report["duration"] == pytest.approx(SPOKEN_SECONDS, abs=0.15)
    assert report["requestId"]  # exposed to the page's script by the CORS rules
    assert _generations(tts_mock)[:1] == [TEXT]


def test_a_page_on_another_origin_is_refused_before_anything_is_paid(
    browser: Any,
    page_origin: str,
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
) -> None:
    # Another origin is allowed, not this page's: same host, another port.
    host, port = page_origin.rsplit(":", 1)
    shim = tts_shim_factory(cors_origins=(f"{host}:{int(port) + 1}",))

    report = _visit(browser, page_origin, shim)

    assert report["error"].startswith("TypeError"), report  # "Failed to fetch"
    assert "duration" not in report
    assert report.get("simpleSent") is True  # sent (no preflight), answered 403 unseen
    assert _generations(tts_mock) == []
    assert tts_mock.journal == []  # the mock saw nothing at all
