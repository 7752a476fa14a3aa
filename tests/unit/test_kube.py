"""The operator's own API writes: exact requests, the official client's credentials, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from tests.support import loopback_server
from tuxio.operator.kube import ApiError, AsyncApi, Conflict, Kube, NotFound


class Server:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": json.loads(await request.read()),
            }
        )
        if self.status >= 400:
            return web.json_response({"kind": "Status", "message": "no"}, status=self.status)
        return web.json_response({"metadata": {"name": "s"}})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    fake = Server()
    async with loopback_server(fake.handle) as url:
        fake.url = url
        yield fake


def configuration(url: str) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration(host=url)
    config.api_key["BearerToken"] = "Bearer s3cret"  # as load_kube_config and in-cluster put it
    return config


async def test_status_patch_is_a_merge_patch_of_the_subresource(server: Server) -> None:
    kube = Kube(kubernetes.client.ApiClient(configuration(server.url)))
    try:
        await kube.patch_sandbox_status("ns", "s", {"phase": "Running"})
    finally:
        await kube.http.close()
    (request,) = server.seen
    assert (request["method"], request["path"]) == (
        "PATCH",
        "/apis/tux.io/v1alpha1/namespaces/ns/sandboxes/s/status",
    )
    assert request["headers"]["content-type"] == "application/merge-patch+json"
    assert request["headers"]["authorization"] == "Bearer s3cret"
    assert request["body"] == {"status": {"phase": "Running"}}


async def test_hold_is_one_json_patch_testing_the_uid(server: Server) -> None:
    kube = Kube(kubernetes.client.ApiClient(configuration(server.url)))
    meta = {"uid": "u-1", "annotations": {"x": "y"}, "finalizers": ["other"]}
    try:
        await kube.hold_sandbox("ns", "s", meta, "tux.io/container", {"tux.io/assignment": "{}"})
    finally:
        await kube.http.close()
    (request,) = server.seen
    assert request["path"] == "/apis/tux.io/v1alpha1/namespaces/ns/sandboxes/s"
    assert request["headers"]["content-type"] == "application/json-patch+json"
    assert request["body"] == [
        {"op": "test", "path": "/metadata/uid", "value": "u-1"},
        {"op": "add", "path": "/metadata/annotations/tux.io~1assignment", "value": "{}"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["other", "tux.io/container"]},
    ]


@pytest.mark.parametrize(("status", "error"), [(404, NotFound), (409, Conflict), (422, ApiError)])
async def test_errors(server: Server, status: int, error: type[Exception]) -> None:
    server.status = status
    api = AsyncApi(configuration(server.url))
    try:
        with pytest.raises(error) as caught:
            await api.patch("/x", {}, "application/merge-patch+json")
    finally:
        await api.close()
    assert caught.value.status == status
    assert "no" in caught.value.reason  # the server's own message


async def test_a_401_is_tried_again_with_fresh_credentials(server: Server) -> None:
    config = configuration(server.url)
    api = AsyncApi(config)
    try:
        await api.patch("/x", {}, "application/merge-patch+json")  # credentials read, cached
        config.api_key["BearerToken"] = "Bearer rotated"  # a new token on disk, say
        server.status = 401
        with pytest.raises(ApiError) as caught:
            await api.patch("/x", {}, "application/merge-patch+json")
    finally:
        await api.close()
    assert caught.value.status == 401
    sent = [r["headers"]["authorization"] for r in server.seen]
    assert sent == ["Bearer s3cret", "Bearer s3cret", "Bearer rotated"]
