#!/usr/bin/env python3
"""tuxio-web on this machine, left running: the control plane, the operator, an agent over TLS
with LXC, the gateway and the site; one visit with headless chromium (what the terminal showed
and a screenshot), then the site serves until Ctrl+C (or TUXIO_DEMO_WEB_SECONDS), and
everything is torn down, every visitor's sandbox deleted.

    hack/web-demo.py [--screenshot PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.conftest import RUN_DIR  # noqa: E402
from tests.e2e.webstack import whole_stack  # noqa: E402
from tests.support import stop_leftovers  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def visit_once(url: str, screenshot: Path) -> str:
    """Open the page, wait for the prompt, run a command; what the terminal showed."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 520}, bypass_csp=True)
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("document.body.dataset.state === 'live'", timeout=120_000)
            page.wait_for_function("/[#$] $/m.test(window.tuxio.screen())", timeout=120_000)
            page.locator("#terminal").click()
            page.keyboard.type("uname -a; cat /etc/os-release 2>/dev/null | head -1; uptime")
            page.keyboard.press("Enter")
            page.wait_for_function("/load average/.test(window.tuxio.screen())", timeout=120_000)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
            shown = str(page.evaluate("window.tuxio.screen()"))
            context.close()
        finally:
            browser.close()
    return "\n".join(line for line in shown.splitlines() if line.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, default=RUN_DIR / "web.png")
    args = parser.parse_args()
    seconds = float(os.environ.get("TUXIO_DEMO_WEB_SECONDS", "0"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    step("the whole stack: control plane, operator, agent with LXC, gateway, tuxio-web")
    try:
        with whole_stack(env={"TUXIO_WEB_GRACE_SECONDS": "30"}) as site:
            step(f"tuxio-web is serving at {site.url}/ (log: {site.log})")
            step("one visit with headless chromium")
            shown = visit_once(site.url + "/", args.screenshot)
            print(shown)
            step(f"screenshot: {args.screenshot}")
            if seconds:
                step(f"the site stays up for {seconds:.0f} s (TUXIO_DEMO_WEB_SECONDS)")
            else:
                step(f"open {site.url}/ in a browser on this machine; Ctrl+C stops it all")
            deadline = time.monotonic() + seconds if seconds else float("inf")
            while not stop.wait(1.0) and time.monotonic() < deadline:
                pass
            step("stopping: every visitor's sandbox is deleted")
    finally:
        stop_leftovers()
    step("done; the control plane stays up for the next run (make cluster-down stops it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
