"""The gateway's metrics (prometheus_client, default registry): requests by listener, route
template and code; streams opened and open, by how they ended. No label names a Sandbox, a
visitor or an address."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from tuxio.common.metrics import SHORT_BUCKETS

__all__ = ["API_REQUEST_SECONDS", "OPEN_STREAMS", "STREAMS", "VISITOR_REQUEST_SECONDS"]

API_REQUEST_SECONDS = Histogram(
    "tuxio_gateway_api_request_duration_seconds",
    "Requests to the aggregated API (not WebSocket streams), by method, route and code.",
    ["method", "route", "code"],
    buckets=SHORT_BUCKETS,
)
VISITOR_REQUEST_SECONDS = Histogram(
    "tuxio_gateway_visitor_request_duration_seconds",
    "Requests to the visitor endpoint (not WebSocket streams), by method, route and code.",
    ["method", "route", "code"],
    buckets=SHORT_BUCKETS,
)
STREAMS = Counter(
    "tuxio_gateway_streams_total",
    "Streams relayed to agents, counted when they end, by subprotocol and which side ended them.",
    ["subprotocol", "ended_by"],
)
OPEN_STREAMS = Gauge("tuxio_gateway_open_streams", "Streams being relayed now.")
