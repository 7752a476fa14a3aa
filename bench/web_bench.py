#!/usr/bin/env python3
"""Benchmark: tuxio-web under a rush. Simulated visitors (HTTP and WebSocket clients, not
browsers) arrive open-loop at rising rates, each doing what the page does: GET / (the cookie),
POST /api/visit (a sandbox claimed from the pool and a visitor token), then the terminal at the
gateway's visitor endpoint with the token in the subprotocol list, until the first byte of the
prompt. Everything (API server, etcd, operator, agent, LXC, gateway, tuxio-web, this client)
runs on this machine, on loopback.

Per rate: time from the page request to the first prompt byte (p50, p99), errors, visitors
turned away (queued, limited, full: the friendly answers), sandboxes created against visitors
admitted; afterwards every sandbox is gone. Each visitor comes from an address of its own
(X-Forwarded-For, tuxio-web trusting loopback as its proxy) so that the per-address rate
limit does not stand in for the cap. Writes bench/results/web.json and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import speed_probe  # noqa: E402

from tests.e2e.webstack import POOL, Site, whole_stack  # noqa: E402
from tests.support import stop_leftovers, wait_until  # noqa: E402

V5 = "v5.channel.k8s.io"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def bearer(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"base64url.bearer.authorization.k8s.io.{encoded}"


async def one_visitor(site: Site, index: int, timeout: float) -> tuple[str, float | None, str]:
    """(outcome, ms to the first prompt byte, detail): outcome is admitted, turned or error."""
    address = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    headers = {"X-Forwarded-For": address, "Origin": site.url}
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as http:
            async with http.get(f"{site.url}/", headers=headers) as page:
                await page.read()
                if page.status != 200:
                    return "error", None, f"page {page.status}"
            async with http.post(f"{site.url}/api/visit", headers=headers) as answer:
                visit = await answer.json()
            if visit.get("state") != "ready":
                if visit.get("state") in ("queued", "limited", "full", "retry"):
                    return "turned", None, visit["state"]
                return "error", None, json.dumps(visit)[:200]
            url = (
                f"{visit['gateway']}/v1/namespaces/{visit['namespace']}/sandboxes/"
                f"{visit['name']}/terminal?session={visit['session']}"
            )
            async with http.ws_connect(
                url, protocols=(V5, bearer(visit["token"])), origin=site.url
            ) as ws:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x01":
                        if len(message.data) > 1:
                            return "admitted", (time.perf_counter() - started) * 1000, ""
                    elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break
                return "error", None, "terminal closed before the prompt"
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        return "error", None, f"{type(exc).__name__}: {exc}"[:200]


async def run_rate(
    site: Site, rate: float, seconds: float, first: int, timeout: float
) -> dict[str, Any]:
    """Visitors arriving at `rate` per second for `seconds` (open loop: an arrival does not
    wait for the ones before it)."""
    count = max(1, int(rate * seconds))
    tasks = []
    origin = time.perf_counter()
    for i in range(count):
        delay = origin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_visitor(site, first + i, timeout)))
    results = await asyncio.gather(*tasks)
    latencies = [ms for outcome, ms, _ in results if outcome == "admitted" and ms is not None]
    errors = [detail for outcome, _, detail in results if outcome == "error"]
    turned = [detail for outcome, _, detail in results if outcome == "turned"]
    return {
        "rate_per_second": rate,
        "seconds": seconds,
        "visitors": count,
        "admitted": len(latencies),
        "turned_away": len(turned),
        "turned_away_by_state": {s: turned.count(s) for s in sorted(set(turned))},
        "errors": len(errors),
        "error_samples": errors[:5],
        "first_prompt_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99)},
        "latencies_ms": [round(x, 1) for x in latencies],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    for row in results:
        ordered = sorted(row["latencies_ms"])
        if ordered:
            axis.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))],
                      label=f"{row['rate_per_second']:g}/s")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("page request to first prompt byte (ms, log scale)")
    axis.set_ylabel("fraction of admitted visitors")
    axis.set_title("tuxio-web: visitors arriving open-loop, whole stack on one machine")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "web.json")
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--seconds", type=float, default=30.0, help="arrivals per rate")
    parser.add_argument(
        "--pool", type=int, default=650, help="warm containers in the pool: a 20/s rush of 30 s"
    )
    parser.add_argument("--grace", type=float, default=2.0, help="tuxio-web's grace period")
    parser.add_argument("--max-sandboxes", type=int, default=700)
    parser.add_argument("--timeout", type=float, default=60.0, help="one visitor's patience")
    args = parser.parse_args()
    env = {
        "TUXIO_WEB_TRUSTED_PROXIES": "127.0.0.1/32",
        "TUXIO_WEB_GRACE_SECONDS": str(args.grace),
        "TUXIO_WEB_MAX_SANDBOXES": str(args.max_sandboxes),
        "TUXIO_WEB_SANDBOX_MEMORY_BYTES": str(64 * 1024 * 1024),
        "TUXIO_WEB_QUEUE_LENGTH": "0",  # a simulated visitor does not wait in line
        "TUXIO_WEB_LOG_LEVEL": "warning",
    }
    rows: list[dict[str, Any]] = []
    fills: list[float] = []  # seconds until the pool was full, before each rate
    leftovers: list[str] = []
    probe = speed_probe()
    try:
        with whole_stack(env=env, pool_replicas=args.pool) as site:
            first = 0
            fill_started = time.perf_counter()
            for rate in args.rates:
                # The pool pre-generates: each rush starts with it full, as a site sized for it.
                wait_until(lambda: warm(site) >= args.pool, timeout=1800, interval=1)
                fills.append(round(time.perf_counter() - fill_started, 1))
                status_before = site.status()
                row = asyncio.run(run_rate(site, rate, args.seconds, first, args.timeout))
                first += row["visitors"]
                # Every admitted visitor's sandbox is freed after the grace period (no tab
                # holds it): wait for that before the next rate.
                wait_until(lambda: site.status()["active"] == 0, timeout=300, interval=0.5)
                status = site.status()
                row["sandboxes_created"] = status["created"] - status_before["created"]
                row["sandboxes_deleted"] = status["deleted"] - status_before["deleted"]
                row["created_equals_admitted"] = row["sandboxes_created"] == row["admitted"]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "latencies_ms"}), flush=True)
                fill_started = time.perf_counter()
            leftovers = site_sandboxes(site)
    finally:
        stop_leftovers()
    held = [r["rate_per_second"] for r in rows
            if r["errors"] == 0 and r["first_prompt_ms"]["p99"] is not None
            and r["first_prompt_ms"]["p99"] < 1000]  # fmt: skip
    at20 = next((r for r in rows if r["rate_per_second"] == 20), None)
    result = {
        "benchmark": "web",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": len(__import__("os").sched_getaffinity(0)),
            "python": platform.python_version(),
            "speed_probe_ms": probe,
        },
        "settings": vars(args) | {"out": str(args.out)},
        "pool_fill_seconds_before_each_rate": fills,
        "rates": rows,
        "highest_rate_held": max(held) if held else None,
        "targets_at_20_per_second": None
        if at20 is None
        else {
            "p50_ms": at20["first_prompt_ms"]["p50"],
            "p50_target_ms": 100,
            "p99_ms": at20["first_prompt_ms"]["p99"],
            "p99_target_ms": 500,
        },
        "sandboxes_left_after_the_site": leftovers,
        "cleaned_up": not leftovers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def warm(site: Site) -> int:
    """The pool's ready warm containers, as its status says."""
    found = site.gateway.cluster.kubectl(
        "get", "sandboxpool", POOL, "-n", site.namespace, "-o", "jsonpath={.status.readyReplicas}"
    ).stdout.strip()
    return int(found or 0)


def site_sandboxes(site: Site) -> list[str]:
    """The visitors' sandboxes still there while the site runs (the pool's warm ones aside)."""
    listed = site.gateway.cluster.kubectl(
        "get", "sandboxes", "-n", site.namespace, "-l", "app.kubernetes.io/managed-by=tuxio-web",
        "-o", "name",
    ).stdout  # fmt: skip
    return listed.split()


if __name__ == "__main__":
    sys.exit(main())
