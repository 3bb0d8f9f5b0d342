"""A real browser for the tests of the pages the services serve.

Debian's chromium (installed by `make test-programs`), headless, driven by Playwright: Playwright's
own browser download is never used, and nothing the page asks for leaves 127.0.0.1, so a page that
would need a CDN fails its test instead of working only online.
"""

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Page, Route, async_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
"""Where the tests keep their screenshots (ignored by git; CI can archive it)."""

_CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # the machine has no network: chromium's own calls would be refused
    "--disable-component-update",
    "--disable-sync",
]
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class BrowserPage:
    page: Page
    refused: list[str] = field(default_factory=list)
    """Every address the page asked for outside 127.0.0.1: refused, and kept for the test to assert on."""

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path


@asynccontextmanager
async def chromium_page(viewport: tuple[int, int] = (1280, 900)) -> AsyncIterator[BrowserPage]:
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError("Debian's chromium is not installed: run `make test-programs`")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=_CHROMIUM_FLAGS)
        try:
            context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            opened = BrowserPage(page=await context.new_page())

            async def only_local(route: Route) -> None:
                if urlsplit(route.request.url).hostname in _LOCAL_HOSTS:
                    await route.continue_()
                else:
                    opened.refused.append(route.request.url)
                    await route.abort()

            await context.route("**/*", only_local)
            yield opened
        finally:
            await browser.close()
