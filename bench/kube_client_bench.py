#!/usr/bin/env python3
"""Benchmark: the CPU one Sandbox status patch costs the operator, by Kubernetes client.

The claim path's API writes are merge patches of a Sandbox's status. This measures, in the
same run against the same local API server, the client CPU time (time.process_time: robust to
a busy machine, unlike wall time) of `--patches` such patches with each client, in alternating
blocks so that a change of the machine's speed hits all of them alike:

- `tuxio.operator.kube.AsyncApi`: the operator's own (aiohttp, the official client's
  credentials);
- kubernetes_asyncio's CustomObjectsApi, as it is called by default and with
  `_preload_content=False` (the answer left unparsed, as the operator does not need it).

Writes bench/results/kube-client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import CLUSTER_DIR, ROOT, speed_probe

from tuxio.operator.kube import AsyncApi

GROUP, VERSION = "tux.io", "v1alpha1"
Patch = Callable[[dict[str, Any]], Awaitable[object]]


def kubectl(*args: str) -> None:
    bin_dir = subprocess.run(
        [str(ROOT / "hack" / "build-control-plane.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    kubeconfig = CLUSTER_DIR / "kubeconfig"
    subprocess.run(
        [f"{bin_dir.splitlines()[-1]}/kubectl", f"--kubeconfig={kubeconfig}", *args],
        check=True,
        capture_output=True,
    )


def status(i: int) -> dict[str, Any]:
    return {
        "phase": "Running",
        "observedGeneration": 1,
        "message": f"patch {i}",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "the container runs with its limits in force",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


async def block(patch: Patch, count: int) -> tuple[float, float]:
    """CPU and wall milliseconds per patch over `count` patches, one at a time."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        await patch(status(i))
    return (
        (time.process_time() - cpu) * 1000 / count,
        (time.perf_counter() - wall) * 1000 / count,
    )


async def measure(namespace: str, name: str, patches: int, blocks: int) -> dict[str, Any]:
    kubeconfig = str(CLUSTER_DIR / "kubeconfig")
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    ours = AsyncApi(configuration)
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/sandboxes/{name}/status"
    theirs_config = kubernetes_asyncio.client.Configuration()
    await kubernetes_asyncio.config.load_kube_config(
        config_file=kubeconfig, client_configuration=theirs_config
    )
    theirs_client = kubernetes_asyncio.client.ApiClient(theirs_config)
    theirs = kubernetes_asyncio.client.CustomObjectsApi(theirs_client)

    async def with_ours(body: dict[str, Any]) -> object:
        return await ours.patch(path, {"status": body}, "application/merge-patch+json")

    async def with_theirs(body: dict[str, Any]) -> object:
        return await theirs.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "sandboxes",
            name,
            {"status": body},
            _content_type="application/merge-patch+json",
        )

    async def with_theirs_unparsed(body: dict[str, Any]) -> object:
        answer = await theirs.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "sandboxes",
            name,
            {"status": body},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
        await answer.read()
        answer.release()
        return answer

    clients: dict[str, Patch] = {
        "tuxio AsyncApi": with_ours,
        "kubernetes_asyncio": with_theirs,
        "kubernetes_asyncio, _preload_content=False": with_theirs_unparsed,
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in clients}
    try:
        for patch in clients.values():  # warm-up: connections, caches
            await block(patch, 50)
        for _ in range(blocks):
            for label, patch in clients.items():
                samples[label].append(await block(patch, patches // blocks))
    finally:
        await ours.close()
        await theirs_client.close()
    return {
        label: {
            "cpuMsPerPatch": round(statistics.median(c for c, _ in runs), 3),
            "cpuMsPerPatchBlocks": [round(c, 3) for c, _ in runs],
            "wallMsPerPatch": round(statistics.median(w for _, w in runs), 3),
        }
        for label, runs in samples.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/kube-client.json"))
    parser.add_argument("--patches", type=int, default=3000, help="per client")
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    subprocess.run([str(ROOT / "hack" / "cluster-up.sh")], check=True, capture_output=True)
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "-f", str(ROOT / "crds"))
    namespace, name = f"kube-bench-{uuid.uuid4().hex[:6]}", "target"
    kubectl("create", "namespace", namespace)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": "busybox"},
    }
    probe_before = speed_probe()
    try:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(CLUSTER_DIR / "kubeconfig"), client_configuration=configuration
        )
        kubernetes.client.CustomObjectsApi(
            kubernetes.client.ApiClient(configuration)
        ).create_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxes", body)
        result = asyncio.run(measure(namespace, name, args.patches, args.blocks))
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")
    document = {
        "benchmark": "client CPU per Sandbox status patch (merge patch), by Kubernetes client, "
        "against the local API server, one patch at a time",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "speedProbeMs": {"before": probe_before, "after": speed_probe()},
        },
        "patchesPerClient": args.patches,
        "blocks": args.blocks,
        "clients": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
