"""Schemathesis against a real server, one operation of its OpenAPI document at a time.

Every case is sent over HTTP to the running process and its answer checked; failures are
collected rather than raised at the first, so that one run reports every distinct one with the
case that found it. Two modes:

- with credentials: no 5xx, and the answer as the document says (status code, content type,
  headers, body schema); positive and negative cases (data that fits the schema, data that
  does not);
- without: any case, with no Authorization header or a made-up one, is answered 401 with a
  JSON reason (the health probes excepted, which answer anyone).

Operations marked `x-websocket` in the document (or named by the caller) are also sent as
WebSocket upgrades (Upgrade, Sec-WebSocket-* headers): an upgrade that is refused must be a
4xx with a JSON body, never a 5xx; one that is accepted (101) is closed at once.

Used by tests/agent/test_fuzz.py and tests/e2e/test_gateway_fuzz.py (a few cases per
operation, in `make test`) and by bench/fuzz.py (`make fuzz`, at least 1000 per operation).
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# How many cases per operation the short run in `make test` sends (per mode); `make fuzz`
# sets TUXIO_FUZZ_CASES to at least 1000.
SHORT_CASES = int(os.environ.get("TUXIO_FUZZ_CASES", "12"))

# What the fuzzer found in the agent and the gateway, and how each was fixed (docs/fuzz.md).
FIXED: list[dict[str, str]] = [
    {
        "where": "agent, GET /v1/containers/{name}/exec as an upgrade",
        "found": "a handshake the websockets layer refused (a malformed Sec-WebSocket-Protocol, "
        "a bad key) answered a plain-text 400",
        "fix": "the agent's WebSocket protocol answers those refusals with its JSON error body "
        "(nodeagent/handshake.py)",
    },
    {
        "where": "agent, every route but /healthz, without the token",
        "found": "400 instead of 401: malformed JSON, a body FastAPI could not parse and a "
        "malformed handshake were refused before the token was checked",
        "fix": "the token is checked first: an ASGI middleware (nodeagent/authn.py) and the "
        "WebSocket protocol before the handshake's own checks",
    },
    {
        "where": "agent, a body FastAPI could not parse (and any unknown route or method)",
        "found": 'answered {"detail": ...} without the agent\'s reason and message',
        "fix": "Starlette's and FastAPI's own refusals answer ErrorBody, with their headers",
    },
    {
        "where": "agent, PUT /v1/containers/{name}/files",
        "found": "the schema documented Content-Length as a parameter; a client sending one "
        "apart from its body gets the HTTP parser's plain-text 400",
        "fix": "the header is read by the route but no longer documented as a parameter",
    },
    {
        "where": "agent, POST /v1/containers/{name}/exec",
        "found": "500 (ValueError: embedded null byte) for an env value with a NUL byte: the "
        "request was validated for NUL in argv and env names only",
        "fix": "ExecRequest refuses a NUL in an env value too (422)",
    },
    {
        "where": "gateway's documents, GET .../files of a directory",
        "found": "the hand-written listing named its items 'entries'; the agent says 'items'",
        "fix": "the answers the gateway passes on are described from the agent's own models",
    },
]

SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# The longest request line the servers here read (aiohttp's 8190, websockets' 8192 bytes): a
# longer one cannot be parsed, so it is refused with a 4xx of the HTTP layer's own making
# (400, 414) before any route, credentials or document come into it. Such a case is checked
# for that alone: a 4xx, never a 5xx and never a success (or a connection the server closed
# before the client finished sending it: the 4xx is then lost in the reset).
MAX_REQUEST_LINE = 8190

# A request may legitimately take a while (an exec with a timeout of its own), never this long.
REQUEST_TIMEOUT = 120.0

_TOKEN_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
# What a caller without the token may send in its place: nothing, junk, a bearer of junk.
MADE_UP_AUTHORIZATION = st.one_of(
    st.none(),
    st.text(_TOKEN_CHARS, max_size=80),
    st.builds(lambda s: f"Bearer {s}", st.text(_TOKEN_CHARS, max_size=80)),
    st.builds(lambda s: f"Basic {s}", st.text(_TOKEN_CHARS, min_size=1, max_size=40)),
)
SUBPROTOCOL_OFFERS = st.one_of(
    st.sampled_from(
        ["v5.channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io, v4.channel.k8s.io"]
    ),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","), max_size=40
    ),
)


def made_up_authorization(data: st.DataObject) -> tuple[dict[str, str], None]:
    """Headers of a caller without the token: no Authorization, or a made-up one."""
    made_up = data.draw(MADE_UP_AUTHORIZATION)
    return ({} if made_up is None else {"Authorization": made_up}), None


Cert = tuple[str, str]


@dataclass
class Target:
    """Where the cases go and how the server is reached."""

    base_url: str
    credentials: Mapping[str, str]  # the headers that authenticate a caller
    verify: bool | str = True  # a CA bundle's path, for a server of a CA of its own
    cert: Cert | None = None  # a client certificate (the API server's front proxy)
    extra_headers: Mapping[str, str] = field(default_factory=dict)  # sent with every case
    # The name the server's certificate is checked for, when it is not the URL's host.
    server_hostname: str | None = None
    # What a caller without credentials sends instead: headers, and a client certificate.
    forge: Callable[[st.DataObject], tuple[dict[str, str], Cert | None]] = made_up_authorization


class _NamedHost(requests.adapters.HTTPAdapter):
    """TLS to an address, the certificate checked for another name (a Service's)."""

    def __init__(self, server_hostname: str) -> None:
        self._server_hostname = server_hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_hostname
        super().init_poolmanager(*args, **kwargs)


@dataclass
class OperationReport:
    """What one operation's run sent and found."""

    operation: str
    authenticated: bool
    asked: int
    cases: int = 0
    distinct: set[str] = field(default_factory=set)  # the requests as curl would send them
    upgrades: int = 0
    oversize: int = 0  # cases whose request line was longer than MAX_REQUEST_LINE
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # distinct failure -> its first case

    def as_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "credentials": self.authenticated,
            "cases": self.cases,
            "distinct_cases": len(self.distinct),
            "upgrades": self.upgrades,
            "oversize": self.oversize,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures": sorted(self.failures),
        }


# A per-operation adjustment of each generated case (pin a path parameter to a real object,
# a body field to a real template), drawn from hypothesis like the case itself.
Tweak = Callable[[Case, st.DataObject], None]
# Called after each answer (delete what a fuzzed create really created).
After = Callable[[Case, requests.Response], None]


def load(document: dict[str, Any]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_dict(json.loads(json.dumps(document)))


def operations(schema: schemathesis.BaseSchema) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def is_websocket(operation: Any) -> bool:
    return bool(operation.definition.raw.get("x-websocket"))


def _strategy(operation: Any, modes: Sequence[GenerationMode]) -> st.SearchStrategy[Case]:
    strategies = []
    for mode in modes:
        try:
            strategies.append(operation.as_strategy(generation_mode=mode))
        except Exception:
            if mode is GenerationMode.POSITIVE:
                raise
    return st.one_of(strategies)


def _upgrade_headers(data: st.DataObject) -> dict[str, str]:
    key = base64.b64encode(data.draw(st.binary(min_size=16, max_size=16))).decode()
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Protocol": data.draw(SUBPROTOCOL_OFFERS),
    }


def _request_line(method: str | bytes | None, url: str | bytes | None) -> str:
    """The request line of a request to `url`, as the server reads it."""
    sent = urlsplit(url.decode() if isinstance(url, bytes) else url or "")
    verb = method.decode() if isinstance(method, bytes) else method or ""
    return f"{verb} {sent.path}?{sent.query} HTTP/1.1"


def _json_refusal(response: requests.Response) -> str | None:
    """Why `response` is not a 4xx with a JSON body that gives a reason (None: it is one)."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}, not a 4xx"
    try:
        body = response.json()
    except ValueError:
        return (
            f"status {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
        )
    if not isinstance(body, dict) or not body.get("reason") or not body.get("message"):
        return f"status {response.status_code}: the JSON body gives no reason and message: {body!r}"
    return None


def fuzz_operation(
    operation: Any,
    target: Target,
    *,
    cases: int,
    authenticated: bool,
    open_to_all: bool = False,
    websocket: bool = False,
    tweak: Tweak | None = None,
    after: After | None = None,
) -> OperationReport:
    """Send at least `cases` cases of `operation` (fewer only when its input space is smaller),
    in rounds of hypothesis runs, and check every answer."""
    report = OperationReport(operation.label, authenticated, cases)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategy = _strategy(operation, modes)

    def record(problem: str, case: Case, response: requests.Response | None) -> None:
        key = problem.splitlines()[0][:200]
        if key not in report.failures:
            status = "no answer" if response is None else f"answered {response.status_code}"
            body = "" if response is None else response.text[:500]
            curl = case.as_curl_command(base_url=target.base_url)
            report.failures[key] = f"{problem}\n{status}: {body}\n{curl}"

    def send(case: Case, headers: dict[str, str], cert: Cert | None) -> requests.Response | None:
        with requests.Session() as session:  # an upgrade's connection is not reused
            if target.server_hostname is not None:
                session.mount("https://", _NamedHost(target.server_hostname))
            try:
                return case.call(
                    base_url=target.base_url,
                    session=session,
                    headers=headers,
                    verify=target.verify,
                    cert=cert,
                    timeout=REQUEST_TIMEOUT,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                sent = exc.request
                if (
                    isinstance(exc, requests.ConnectionError)
                    and not isinstance(exc, requests.Timeout)
                    and sent is not None
                    and len(_request_line(sent.method, sent.url)) > MAX_REQUEST_LINE
                ):
                    # Refused by the HTTP layer, which answers 400 and closes at once: while
                    # the client is still sending the rest, the close resets the connection
                    # and the 400 may be lost with it. Counted as refused, never as hanging.
                    report.oversize += 1
                    return None
                record(f"request failed: {type(exc).__name__}: {exc}", case, None)
                return None

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=strategy, data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        if tweak is not None:
            tweak(case, data)
        headers = dict(target.extra_headers)
        cert = target.cert
        if authenticated:
            headers.update(target.credentials)
        else:
            for name in list(case.headers or {}):
                if name.lower() in ("authorization", *(h.lower() for h in target.credentials)):
                    del case.headers[name]
            forged, cert = target.forge(data)
            headers.update(forged)
        upgrade = websocket and data.draw(st.booleans())
        if upgrade:
            headers.update(_upgrade_headers(data))
        report.cases += 1
        report.distinct.add(case.as_curl_command(headers, base_url=target.base_url))
        report.upgrades += upgrade
        response = send(case, headers, cert)
        if response is None:
            return
        report.statuses[response.status_code] += 1
        if after is not None:
            after(case, response)
        if response.status_code >= 500:
            record(f"server error {response.status_code}", case, response)
        if len(_request_line(response.request.method, response.request.url)) > MAX_REQUEST_LINE:
            report.oversize += 1
            if not 400 <= response.status_code < 500:
                record(f"an unreadable request answered {response.status_code}", case, response)
            return
        if not authenticated and not open_to_all:
            if response.status_code != 401:
                record(
                    f"answered {response.status_code} without credentials, not 401", case, response
                )
            elif problem := _json_refusal(response):
                record(f"401 without a JSON reason: {problem}", case, response)
            return
        if upgrade:
            if response.status_code != 101 and (problem := _json_refusal(response)):
                record(f"upgrade refused badly: {problem}", case, response)
            return
        try:
            case.validate_response(response, checks=SCHEMA_CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                record(f"{failure.title}: {failure.message}", case, response)

    rounds = 0
    while report.cases < cases and rounds < cases:
        before = report.cases
        try:
            run()
        except Unsatisfiable:
            break
        rounds += 1
        if report.cases == before:
            break
    return report


def write_report(suite: str, reports: Sequence[OperationReport]) -> None:
    """Add `suite`'s reports to the JSON file named by TUXIO_FUZZ_REPORT (`make fuzz`)."""
    path = os.environ.get("TUXIO_FUZZ_REPORT")
    if not path:
        return
    target = Path(path)
    found = json.loads(target.read_text()) if target.exists() else {}
    found.setdefault("suites", {})[suite] = {
        "cases_per_operation_asked": reports[0].asked if reports else 0,
        "operations": [report.as_json() for report in reports],
        "failures": sum(len(report.failures) for report in reports),
    }
    found["schemathesis"] = schemathesis.__version__
    found["fixed"] = FIXED
    target.write_text(json.dumps(found, indent=2) + "\n")


def summary(reports: Sequence[OperationReport]) -> str:
    """Every failure found, with the case that found it (for an assertion's message)."""
    lines = []
    for report in reports:
        for failure in report.failures.values():
            mode = "with credentials" if report.authenticated else "without credentials"
            lines.append(f"--- {report.operation} ({mode})\n{failure}")
    return "\n".join(lines)


# ----- the node agent -------------------------------------------------------------------------

# Real paths inside a busybox container, pinned in half the files cases (a generated path
# seldom names anything).
AGENT_PATHS = ["/", "/etc", "/etc/hostname", "/tmp/fuzzed", "/bin/sh", "/proc/self/status"]


def agent_target(url: str, token: str, verify: bool | str = True) -> Target:
    return Target(url, {"Authorization": f"Bearer {token}"}, verify)


def fuzz_agent(
    target: Target, document: dict[str, Any], keeper: str, *, cases: int, authenticated: bool
) -> list[OperationReport]:
    """Every operation of the agent's document; `keeper` is a running container that the
    cases of the other operations aim at half the time (it is never deleted or converged:
    creates get fresh names, and whatever a fuzzed create really made is deleted at once)."""

    def delete(name: str) -> None:
        requests.delete(
            f"{target.base_url}/v1/containers/{name}",
            headers=dict(target.credentials),
            verify=target.verify,
            timeout=REQUEST_TIMEOUT,
        ).raise_for_status()

    def pin(case: Case, data: st.DataObject) -> None:
        method, path = case.operation.method.upper(), case.operation.path
        if "name" in (case.path_parameters or {}):
            if path == "/v1/containers/{name}" and method in ("PUT", "DELETE"):
                if case.path_parameters["name"] == keeper:
                    case.path_parameters["name"] = f"x{keeper}"[:63]
            elif data.draw(st.booleans()):
                case.path_parameters["name"] = keeper
        if path.endswith("/files") and data.draw(st.booleans()):
            case.query = {**(case.query or {}), "path": data.draw(st.sampled_from(AGENT_PATHS))}
        creates = method == "PUT" and path == "/v1/containers/{name}"
        if creates and isinstance(case.body, dict) and data.draw(st.booleans()):
            case.body["template"] = "busybox"

    def created(case: Case, response: requests.Response) -> None:
        if (
            case.operation.method.upper() == "PUT"
            and case.operation.path == "/v1/containers/{name}"
            and response.status_code < 300
        ):
            delete(case.path_parameters["name"])

    schema = load(document)
    reports = []
    for operation in operations(schema):
        reports.append(
            fuzz_operation(
                operation,
                target,
                cases=cases,
                authenticated=authenticated,
                open_to_all=operation.path == "/healthz",
                websocket=is_websocket(operation),
                tweak=pin,
                after=created,
            )
        )
    return reports


# ----- the gateway ----------------------------------------------------------------------------

HEALTH_PATHS = ("/healthz", "/livez", "/readyz")
SANDBOX_PATHS = ["/", "/etc/hostname", "/tmp/fuzzed", "/tmp"]


def front_proxy_forgery(
    cert: Cert,
) -> Callable[[st.DataObject], tuple[dict[str, str], Cert | None]]:
    """A caller the aggregated API must not believe: the front proxy's certificate with no user
    named, or a user named (and a bearer made up) on a connection without that certificate."""

    def forge(data: st.DataObject) -> tuple[dict[str, str], Cert | None]:
        if data.draw(st.booleans()):
            return {}, cert
        headers, _ = made_up_authorization(data)
        user = data.draw(st.none() | st.text(_TOKEN_CHARS, min_size=1, max_size=40))
        if user is not None:
            headers["X-Remote-User"] = user
            headers["X-Remote-Group"] = "system:masters"
        return headers, None

    return forge


def fuzz_gateway(
    target: Target,
    document: dict[str, Any],
    sandbox: tuple[str, str],
    *,
    cases: int,
    authenticated: bool,
) -> list[OperationReport]:
    """Every operation of one of the gateway's documents; half the cases name the running
    Sandbox `sandbox` (namespace, name) that the credentials may open."""

    def pin(case: Case, data: st.DataObject) -> None:
        params = case.path_parameters or {}
        if "namespace" in params and data.draw(st.booleans()):
            params["namespace"], params["name"] = sandbox
        if case.operation.path.endswith("/files") and data.draw(st.booleans()):
            case.query = {**(case.query or {}), "path": data.draw(st.sampled_from(SANDBOX_PATHS))}

    reports = []
    for operation in operations(load(document)):
        # The health probes answer anyone; so does a browser's CORS preflight (it never
        # carries credentials, by the browsers' rules).
        open_to_all = operation.path in HEALTH_PATHS or operation.method.upper() == "OPTIONS"
        reports.append(
            fuzz_operation(
                operation,
                target,
                cases=cases,
                authenticated=authenticated,
                open_to_all=open_to_all,
                websocket=is_websocket(operation),
                tweak=pin,
            )
        )
    return reports
