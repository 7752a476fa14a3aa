"""tuxio-web in a real browser: Debian's chromium driven by Playwright, against the real stack
(the API server, the operator, an agent over TLS with LXC, the gateway registered as the
aggregated API, tuxio-web under its manifests' ServiceAccount).

The page is read the way a visitor reads it: what the terminal shows (xterm.js's buffer,
through `window.tuxio.screen()`) and the page's state (`<body data-state>`), always waited
for, never slept on. The site's cap comes from the hosts: each holds one visitor sandbox of
the size the site is told (its whole memory), two hosts make a cap of two. The contexts
bypass the page's Content-Security-Policy, which forbids evaluating strings, as Playwright's
waits do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from websockets.exceptions import InvalidStatus

from tests.e2e.conftest import GROUP, VERSION, Cluster, Operator, gone
from tests.e2e.test_gateway import V5, agent_over_tls, bearer, running_gateway
from tests.e2e.webstack import Site, gateway_env, running_site
from tests.support import free_port, wait_until
from tests.wsclient import connect
from tuxio.web.capacity import host_room

CHROMIUM = "/usr/bin/chromium"
GRACE = 20  # seconds a closed tab's sandbox is kept: more than a reload takes on a slow machine
WAIT_MS = 120_000  # patience for what the page shows, on a slow machine


@pytest.fixture(scope="module")
def web_namespace(cluster: Cluster, operator: Operator) -> Iterator[str]:
    name = f"web-e2e-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def site(
    cluster: Cluster,
    operator: Operator,
    core: kubernetes.client.CoreV1Api,
    custom: kubernetes.client.CustomObjectsApi,
    web_namespace: str,
) -> Iterator[Site]:
    port = free_port()
    with (
        agent_over_tls(cluster, custom, "web-e2e"),  # the host the pool places on
        running_gateway(cluster, core, ("gw-web",), gateway_env(port)) as gateway,
        hosts_memory(custom) as (hosts, memory),
        running_site(
            cluster, core, custom, gateway, web_namespace, port,
            {
                "TUXIO_WEB_GRACE_SECONDS": str(GRACE),
                "TUXIO_WEB_SANDBOX_MEMORY_BYTES": str(memory),  # one per host
                "TUXIO_WEB_RATE_PER_MINUTE": "600",
                "TUXIO_WEB_RATE_BURST": "50",
            },
        ) as found,
    ):  # fmt: skip
        wait_until(lambda: found.status()["cap"] == len(hosts), timeout=60)
        yield found


@contextlib.contextmanager
def hosts_memory(custom: kubernetes.client.CustomObjectsApi) -> Iterator[tuple[list[Any], int]]:
    """The hosts that take sandboxes now (Ready, schedulable: what the site's cap counts), and
    the memory of the largest: a visitor sandbox that size fits once on each."""
    listed = custom.list_cluster_custom_object(GROUP, VERSION, "sandboxhosts")["items"]
    hosts = [h for h in listed if host_room(h, 1) > 0]
    yield hosts, max(h["status"]["capacity"]["memoryBytes"] for h in hosts)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM)
    yield launched
    launched.close()


@pytest.fixture
def visitor(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    """A visitor of their own (a browser context: its own cookies); their tabs closed after."""
    wait_until(lambda: site.status()["active"] == 0, timeout=120, interval=0.2)
    context = browser.new_context(viewport={"width": 1000, "height": 640}, bypass_csp=True)
    yield context
    context.close()


def open_shell(context: BrowserContext, site: Site) -> Page:
    page = context.new_page()
    page.goto(site.url)
    live(page)
    wait_for_screen(page, r"[#$] $")
    return page


def live(page: Page) -> None:
    page.wait_for_function("document.body.dataset.state === 'live'", timeout=WAIT_MS)


def screen(page: Page) -> str:
    return str(page.evaluate("window.tuxio.screen()"))


def wait_for_screen(page: Page, pattern: str) -> str:
    """Until the terminal shows a line matching `pattern` (multiline regex); the screen."""
    page.wait_for_function(
        "(pattern) => new RegExp(pattern, 'm').test(window.tuxio.screen())",
        arg=pattern,
        timeout=WAIT_MS,
    )
    return screen(page)


def run(page: Page, command: str, expect: str) -> str:
    """Type `command` and Enter into the terminal; wait until `expect` (a regex) shows."""
    page.locator("#terminal").click()
    page.keyboard.type(command)
    page.keyboard.press("Enter")
    return wait_for_screen(page, expect)


def visit_of(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.evaluate("window.tuxio.visit")
    return found


def get_sandbox(custom: kubernetes.client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, ns, "sandboxes", name
    )
    return found


# ----- the tests ----------------------------------------------------------------------------


def test_the_page_opens_into_a_linux_shell(
    visitor: BrowserContext, site: Site, custom: kubernetes.client.CustomObjectsApi
) -> None:
    page = open_shell(visitor, site)
    shown = run(page, "uname -a", r"^Linux \S+ \S+")
    assert re.search(r"^Linux ", shown, re.M)
    # A Sandbox of the site's namespace, claimed from its pool, placed by the visitor's address.
    found = get_sandbox(custom, site.namespace, visit_of(page)["name"])
    assert found["spec"]["poolRef"] == {"name": "web"}
    assert found["spec"]["placement"]["clientIP"] == "127.0.0.1"
    assert found["spec"]["lifetime"]["ttlSeconds"] == 3600
    assert found["status"]["phase"] == "Running"


def test_resizing_the_window_changes_the_terminal_size_inside(
    visitor: BrowserContext, site: Site
) -> None:
    page = open_shell(visitor, site)
    before = page.evaluate("[window.tuxio.term.rows, window.tuxio.term.cols]")
    run(page, "stty size", rf"^{before[0]} {before[1]}$")
    page.set_viewport_size({"width": 640, "height": 400})
    page.wait_for_function(
        "([rows, cols]) => window.tuxio.term.rows !== rows && window.tuxio.term.cols !== cols",
        arg=before,
        timeout=WAIT_MS,
    )
    after = page.evaluate("[window.tuxio.term.rows, window.tuxio.term.cols]")
    assert after[0] < before[0] and after[1] < before[1]
    run(page, "clear; stty size", rf"^{after[0]} {after[1]}$")


def test_a_reload_reattaches_to_the_same_shell(visitor: BrowserContext, site: Site) -> None:
    page = open_shell(visitor, site)
    marker = uuid.uuid4().hex[:10]
    shown = run(page, f"echo mark-{marker}; hostname", rf"^mark-{marker}\n(\S+)")
    hostname = re.search(rf"^mark-{marker}\n(\S+)", shown, re.M).group(1)  # type: ignore[union-attr]
    first = visit_of(page)
    page.reload()
    live(page)
    wait_for_screen(page, rf"^mark-{marker}$")  # the earlier output, replayed
    assert visit_of(page) == first
    again = run(page, "echo host-$(hostname)", r"^host-(\S+)$")
    assert re.findall(r"^host-(\S+)$", again, re.M)[-1] == hostname


def test_a_second_visitor_gets_another_sandbox_and_their_token_opens_only_theirs(
    browser: Browser, visitor: BrowserContext, site: Site
) -> None:
    first = visit_of(open_shell(visitor, site))
    other = browser.new_context(bypass_csp=True)
    try:
        page = open_shell(other, site)
        second = visit_of(page)
        assert second["name"] != first["name"]
        run(page, "echo second-$(hostname)", r"^second-\S+$")
        # Their page's own visit answer: a token for their sandbox only.
        answer = page.evaluate("fetch('/api/visit', {method: 'POST'}).then(r => r.json())")
        assert answer["name"] == second["name"]
        claims = json.loads(base64.urlsafe_b64decode(answer["token"].split(".")[1] + "=="))
        assert claims["name"] == second["name"] and claims["scopes"] == ["terminal"]
        gateway = answer["gateway"]
        url = (f"{gateway}/v1/namespaces/{first['namespace']}/sandboxes/{first['name']}"
               f"/terminal?session={first['session']}")  # fmt: skip
        with pytest.raises(InvalidStatus) as refused:
            connect(url, subprotocols=[V5, bearer(answer["token"])],  # type: ignore[list-item]
                    origin=site.url, open_timeout=30, proxy=None)  # type: ignore[arg-type]  # fmt: skip
        assert refused.value.response.status_code == 403
    finally:
        other.close()


def test_a_closed_tab_frees_its_sandbox_after_the_grace_period(
    visitor: BrowserContext, site: Site, custom: kubernetes.client.CustomObjectsApi
) -> None:
    page = open_shell(visitor, site)
    name = visit_of(page)["name"]
    page.close()
    wait_until(lambda: gone(custom, site.namespace, name), timeout=GRACE + 60, interval=0.2)
    assert site.status()["active"] == 0


def test_over_the_cap_a_friendly_page_then_a_shell_once_room_frees(
    browser: Browser, visitor: BrowserContext, site: Site
) -> None:
    cap = site.status()["cap"]
    assert cap == 2
    others = [browser.new_context(bypass_csp=True) for _ in range(cap)]
    try:
        holders = [open_shell(context, site) for context in others]
        page = visitor.new_page()
        response = page.goto(site.url)
        assert response is not None and response.status == 200
        page.wait_for_function("document.body.dataset.state === 'queued'", timeout=WAIT_MS)
        message = page.locator("#message").inner_text()
        assert "number 1 in line" in message
        assert re.search(r"Checking again in \d+ s", page.locator("#detail").inner_text())
        holders[0].context.close()  # a visitor leaves: after the grace period, room for one
        live(page)
        run(page, "uname -s", r"^Linux$")
    finally:
        for context in others:
            context.close()
