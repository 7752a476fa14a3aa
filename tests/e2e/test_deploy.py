"""The deployment manifests against the real API server: every object valid, and the roles
for people doing what docs/deploy.md says (the operator's own role is proven by every other
e2e test, which runs the operator as the manifests' ServiceAccount)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from tests.e2e.conftest import (
    GROUP,
    ROOT,
    RUN_DIR,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Host,
    sandbox,
    service_account_token,
    token_kubeconfig,
    wait_phase,
)
from tests.support import wait_until

MANIFESTS = ROOT / "manifests"
KUSTOMIZATIONS = [
    "overlays/default",
    "overlays/geoip",
    "base/crds",
    "base/rbac",
    "base/operator",
    "base/nodeagent",
    "base/gateway",
    "base/metrics",
    "base/web",
    "overlays/web",
]
WEB_NS = "tuxio-web"


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_valid_on_the_server(cluster: Cluster, path: str) -> None:
    """Server-side dry run: schema, strict field validation and admission for every object."""
    cluster.kubectl("create", "namespace", WEB_NS, check=False)  # a dry run creates none
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-k", str(MANIFESTS / path)
    )
    built = cluster.kubectl("kustomize", str(MANIFESTS / path)).stdout
    count = built.count("\nkind: ") + built.startswith("kind: ")
    assert count > 0
    assert result.stdout.count("(server dry run)") == count, result.stdout


def test_overlay_has_what_the_issue_asks(cluster: Cluster) -> None:
    """The combined objects, as the API server would store them."""
    built = cluster.kubectl(
        "apply", "--dry-run=server", "-k", str(MANIFESTS / "overlays/default"), "-o", "json"
    ).stdout
    items = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(built)["items"]}
    deployment = items[("Deployment", "tuxio-operator")]
    assert deployment["metadata"]["namespace"] == SYSTEM_NS
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tuxio-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert {"requests", "limits"} <= container["resources"].keys()
    env = {e["name"]: e.get("value") or e.get("valueFrom") for e in container["env"]}
    assert env["TUXIO_OPERATOR_NODE_HOSTS"] == "true"
    # Claims at admission: served behind the webhook Service, certificate in memory.
    assert env["TUXIO_OPERATOR_WEBHOOK_SERVICE"] == "tuxio-operator-webhook"
    assert env["TUXIO_OPERATOR_WEBHOOK_SERVICE_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "webhook-cert": env["TUXIO_OPERATOR_WEBHOOK_CERT_DIR"],
        "ledger": "/var/lib/tuxio",
    }
    assert {"containerPort": 9443, "name": "webhook", "protocol": "TCP"} in container["ports"]
    service = items[("Service", "tuxio-operator-webhook")]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    # Only from outside the pod network (the API server) to the webhook and health ports; the
    # metrics port from a labelled namespace; no other ingress (as the API server stored it).
    policy = items[("NetworkPolicy", "tuxio-operator")]["spec"]
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    webhook_rule, metrics_rule = policy["ingress"]
    assert webhook_rule["from"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}]
    assert {p["port"] for p in webhook_rule["ports"]} == {"webhook", "health"}
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"tux.io/metrics-scraper": "true"}}}
    ]
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
    named = {p["name"] for p in container["ports"]}
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} <= named

    agent = items[("DaemonSet", "tuxio-agent")]["spec"]["template"]["spec"]
    assert agent["nodeSelector"] == {"tux.io/lxc-host": "true"}
    assert agent["hostNetwork"] is True
    (serve,) = agent["containers"]
    assert serve["securityContext"]["privileged"] is True
    # The data directory, the LSM's (AppArmor profiles), and the node's cgroup tree (LXC makes
    # each container's cgroups there).
    assert {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v} == {
        "/var/lib/tuxio",
        "/sys/kernel/security",
        "/sys/fs/cgroup",
    }
    ports = {e["name"]: e["value"] for e in serve["env"]}
    assert ports["TUXIO_AGENT_PORT"] == env["TUXIO_OPERATOR_NODE_AGENT_PORT"]
    # No Secret on an LXC host: the agent's certificate and token come from its bootstrap,
    # whose pod-bound token only the bootstrap containers see; no CA key anywhere.
    assert not [v for v in agent["volumes"] if "secret" in v]
    assert agent["serviceAccountName"] == "tuxio-agent-bootstrap"
    assert agent["automountServiceAccountToken"] is False
    (projected,) = [v for v in agent["volumes"] if "projected" in v]
    assert projected["name"] == "bootstrap"
    assert "serviceAccountToken" in projected["projected"]["sources"][0]
    mounts = {
        c["name"]: {m["name"] for m in c.get("volumeMounts", [])}
        for c in agent["initContainers"] + agent["containers"]
    }
    assert {name for name, used in mounts.items() if "bootstrap" in used} == {
        "credentials",
        "credentials-renew",
    }
    renew = [c for c in agent["initContainers"] if c["name"] == "credentials-renew"]
    assert renew[0]["restartPolicy"] == "Always"  # a sidecar
    assert "ca.key" not in built
    # Metrics: a Service per component on its metrics port, annotated for scraping, in front
    # of a container port of that name; the agents' headless (every host scraped).
    workloads = {
        "tuxio-operator-metrics": (deployment, 9471),
        "tuxio-gateway-metrics": (items[("Deployment", "tuxio-gateway")], 9472),
        "tuxio-agent-metrics": (items[("DaemonSet", "tuxio-agent")], 9473),
    }
    for name, (workload, port) in workloads.items():
        metrics = items[("Service", name)]
        annotations = metrics["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
            str(port),
            "/metrics",
        )
        assert metrics["metadata"]["labels"]["tux.io/metrics"] == "true"
        assert metrics["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        assert metrics["spec"]["ports"][0]["targetPort"] == "metrics"
        (served,) = workload["spec"]["template"]["spec"]["containers"]
        assert {"containerPort": port, "name": "metrics", "protocol": "TCP"} in served["ports"]
    assert items[("Service", "tuxio-agent-metrics")]["spec"]["clusterIP"] == "None"
    assert ports["TUXIO_AGENT_METRICS_PORT"] == "9473"


def test_overlay_has_the_gateway(cluster: Cluster) -> None:
    """The gateway as the issue asks for it, as the API server would store it."""
    built = cluster.kubectl(
        "apply", "--dry-run=server", "-k", str(MANIFESTS / "overlays/default"), "-o", "json"
    ).stdout
    items = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(built)["items"]}
    deployment = items[("Deployment", "tuxio-gateway")]
    assert deployment["metadata"]["namespace"] == SYSTEM_NS
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tuxio-gateway"
    assert pod["securityContext"]["runAsNonRoot"] is True
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in spread
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "api",
        "scheme": "HTTPS",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"api": 8443, "visitor": 8444, "metrics": 9472}
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "tuxio-gateway-serving"
    budget = items[("PodDisruptionBudget", "tuxio-gateway")]
    assert budget["spec"]["minAvailable"] == 1
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["selector"]["matchLabels"] == selector
    for service, port in (("tuxio-gateway-api", "api"), ("tuxio-gateway", "visitor")):
        spec = items[("Service", service)]["spec"]
        assert spec["selector"] == selector and spec["ports"][0]["targetPort"] == port
    api = items[("APIService", "v1alpha1.subresources.tux.io")]
    assert api["spec"]["service"] == {
        "name": "tuxio-gateway-api",
        "namespace": SYSTEM_NS,
        "port": 443,
    }
    assert (api["spec"]["group"], api["spec"]["version"]) == ("subresources.tux.io", "v1alpha1")
    assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{SYSTEM_NS}/tuxio-gateway-serving"
    )
    # The signing key Secret ships empty: no key in a repository; a gateway fills it.
    source = cluster.kubectl("kustomize", str(MANIFESTS / "overlays/default")).stdout
    (shipped,) = [o for o in yaml.safe_load_all(source) if o and o["kind"] == "Secret"]
    assert shipped["metadata"]["name"] == "tuxio-gateway-signing-key" and "data" not in shipped
    reader = items[("RoleBinding", "tuxio-gateway-auth-reader")]
    assert reader["metadata"]["namespace"] == "kube-system"
    assert reader["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    delegator = items[("ClusterRoleBinding", "tuxio-gateway-auth-delegator")]
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    for binding in (reader, delegator):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "tuxio-gateway", "namespace": SYSTEM_NS}
        ]


def test_web_overlay_has_the_site(cluster: Cluster) -> None:
    """tuxio-web as the issue asks for it, as the API server would store it."""
    cluster.kubectl("create", "namespace", WEB_NS, check=False)
    built = cluster.kubectl(
        "apply", "--dry-run=server", "-k", str(MANIFESTS / "overlays/web"), "-o", "json"
    ).stdout
    items = {(o["kind"], o["metadata"]["name"]): o for o in json.loads(built)["items"]}
    deployment = items[("Deployment", "tuxio-web")]
    assert deployment["metadata"]["namespace"] == WEB_NS
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tuxio-web"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TUXIO_WEB_POOL"] == items[("SandboxPool", "web")]["metadata"]["name"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert items[("Service", "tuxio-web")]["spec"]["selector"] == selector
    ingress = items[("Ingress", "tuxio-web")]["spec"]["rules"][0]["http"]["paths"][0]
    assert ingress["backend"]["service"]["name"] == "tuxio-web"
    # The gateway takes visitor terminals from the site's origin.
    gateway = items[("Deployment", "tuxio-gateway")]["spec"]["template"]["spec"]
    gw_env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
    assert gw_env["TUXIO_GATEWAY_VISITOR_ALLOWED_ORIGINS"] == "https://play.example.org"
    role = items[("Role", "tuxio-web")]
    assert role["metadata"]["namespace"] == WEB_NS
    assert {(r["apiGroups"][0], res) for r in role["rules"] for res in r["resources"]} == {
        ("tux.io", "sandboxes"),
        ("tux.io", "sandboxpools"),
        ("subresources.tux.io", "sandboxes/token"),
        ("subresources.tux.io", "sandboxes/terminal"),
    }
    reader = items[("ClusterRole", "tuxio-web-host-reader")]
    assert reader["rules"] == [
        {"apiGroups": ["tux.io"], "resources": ["sandboxhosts"], "verbs": ["get", "list"]}
    ]


RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def apply_web_rbac(cluster: Cluster, namespace: str) -> None:
    """tuxio-web's ServiceAccount and roles from base/web, moved into `namespace` (the
    Deployment and the pool stay out: no scheduler here, and no warm containers wanted)."""
    cluster.kubectl("create", "namespace", namespace, check=False)
    built = yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS / "base/web")).stdout)
    kept = []
    for obj in built:
        if not obj or obj["kind"] not in RBAC_KINDS:
            continue
        if obj["kind"] == "ClusterRoleBinding":
            obj["metadata"]["name"] = f"tuxio-web-host-reader-{namespace}"
        elif obj["kind"] != "ClusterRole":
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
        kept.append(obj)
    cluster.apply({"apiVersion": "v1", "kind": "List", "items": kept})


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("create", "sandboxes.tux.io", WEB_NS, True),
        ("delete", "sandboxes.tux.io", WEB_NS, True),
        ("list", "sandboxhosts.tux.io", "", True),
        ("create", "sandboxes.tux.io", "default", False),
        ("get", "secrets", WEB_NS, False),
        ("update", "sandboxhosts.tux.io", "", False),
        ("create", "sandboxpools.tux.io", WEB_NS, False),
    ],
)
def test_web_service_account_may_do_its_job_only(
    cluster: Cluster, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    """Its rights on the tux.io kinds (the subresources of the aggregated API are not
    registered here: tests/e2e/test_web.py mints its tokens under this same role)."""
    apply_web_rbac(cluster, WEB_NS)
    where = ["-n", namespace] if namespace else []
    answer = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        *where,
        f"--as=system:serviceaccount:{WEB_NS}:tuxio-web",
        check=False,
    )
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stderr


def test_samples_valid_on_the_server(cluster: Cluster) -> None:
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(MANIFESTS / "samples")
    )
    assert result.stdout.count("(server dry run)") == 5, result.stdout


# ----- roles for people --------------------------------------------------------------------


class Person:
    """A ServiceAccount standing in for a person, bound to one built-in role in a namespace."""

    def __init__(self, cluster: Cluster, core: kubernetes.client.CoreV1Api, ns: str, role: str):
        self.cluster = cluster
        self.name = f"{role}-user"
        self.identity = f"system:serviceaccount:{ns}:{self.name}"
        cluster.kubectl("create", "serviceaccount", self.name, "-n", ns)
        cluster.kubectl(
            "create",
            "rolebinding",
            self.name,
            "-n",
            ns,
            f"--clusterrole={role}",
            f"--serviceaccount={ns}:{self.name}",
        )
        token = service_account_token(core, ns, self.name)
        self.kubeconfig = token_kubeconfig(cluster, token, RUN_DIR / f"{ns}-{self.name}.kubeconfig")

    def can_i(self, *args: str) -> bool:
        """`kubectl auth can-i`, asked by the admin on this person's behalf (impersonation)."""
        result = self.cluster.kubectl("auth", "can-i", *args, "--as", self.identity, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    def may(self, verb: str, group: str, resource: str, subresource: str, namespace: str) -> bool:
        """A SubjectAccessReview for this person, asked by the admin (`kubectl auth can-i`
        maps names through discovery, which knows an aggregated group only while its server
        runs)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": self.identity,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                },
            },
        }
        answer = self.cluster.kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(review))
        return bool(json.loads(answer.stdout)["status"].get("allowed"))

    def kubectl(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        """kubectl with this person's own token: what the API server really lets through."""
        result = self.cluster.kubectl(
            "--kubeconfig", str(self.kubeconfig), *args, stdin=stdin, check=False
        )
        return result.returncode, result.stdout + result.stderr


def aggregated(cluster: Cluster, role: str) -> bool:
    rules = json.loads(cluster.kubectl("get", "clusterrole", role, "-o", "json").stdout)["rules"]
    return any("tux.io" in (rule.get("apiGroups") or []) for rule in rules)


@pytest.fixture(scope="module")
def people_roles(cluster: Cluster) -> None:
    """The rbac base applied, and its rules aggregated into the built-in edit and view."""
    cluster.kubectl("apply", "-k", str(MANIFESTS / "base/rbac"))
    for role in ("edit", "view", "admin"):
        wait_until(lambda role=role: aggregated(cluster, role), timeout=30)


@pytest.fixture
def team(cluster: Cluster) -> Iterator[str]:
    """A namespace without sandboxes to run (no operator needed)."""
    name = f"team-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


HOST = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "SandboxHost",
    "metadata": {"name": "not-allowed"},
    "spec": {
        "endpoint": "https://h:7443",
        "credentialsSecretRef": {"name": "s", "namespace": SYSTEM_NS},
    },
}


# The gateway's subresources and the verbs the editor role grants on them.
GATEWAY_VERBS = {
    "exec": ("get", "create"),
    "terminal": ("get", "create", "delete"),
    "files": ("get", "create", "update", "delete"),
    "token": ("create",),
}

# What an editor may not do, as `kubectl auth can-i` arguments; the namespace is filled in.
EDITOR_DENIED = [
    ("get", "secrets", "-n", SYSTEM_NS),
    ("list", "secrets", "-n", SYSTEM_NS),
    ("get", "sandboxhosts"),
    ("create", "sandboxhosts"),
    ("patch", "sandboxhosts"),
    ("delete", "sandboxhosts"),
    ("patch", "sandboxhosts", "--subresource=status"),
    ("patch", "sandboxes", "--subresource=status", "-n", "{ns}"),
    ("update", "sandboxpools", "--subresource=status", "-n", "{ns}"),
    ("create", "sandboxes", "-n", SYSTEM_NS),
    ("create", "sandboxes", "-n", "default"),
    ("update", "certificatesigningrequests", "--subresource=approval"),
]


def test_editor_can_create_sandboxes_and_nothing_of_hosts_or_credentials(
    cluster: Cluster, core: kubernetes.client.CoreV1Api, people_roles: None, team: str
) -> None:
    alice = Person(cluster, core, team, "edit")
    for verb in ("create", "get", "list", "watch", "update", "patch", "delete"):
        assert alice.can_i(verb, "sandboxes", "-n", team), verb
        assert alice.can_i(verb, "sandboxpools", "-n", team), verb
    assert alice.can_i("update", "sandboxpools", "--subresource=scale", "-n", team)
    for args in EDITOR_DENIED:
        assert not alice.can_i(*(a.format(ns=team) for a in args)), args
    # Into sandboxes through the gateway (the API server checks the HTTP verb, the gateway
    # `create`).
    for sub, verbs in GATEWAY_VERBS.items():
        for verb in verbs:
            assert alice.may(verb, "subresources.tux.io", "sandboxes", sub, team), (sub, verb)

    # The same, with her own token.
    code, out = alice.kubectl(
        "apply",
        "-n",
        team,
        "-f",
        "-",
        stdin=json.dumps(sandbox("mine", template="busybox", state="Stopped")),
    )
    assert code == 0, out
    code, out = alice.kubectl("get", "sandbox", "mine", "-n", team, "-o", "name")
    assert (code, out.strip()) == (0, "sandbox.tux.io/mine")
    code, out = alice.kubectl("get", "secret", "tuxio-agent-ca", "-n", SYSTEM_NS)
    assert code != 0 and "Forbidden" in out, out
    code, out = alice.kubectl("apply", "-f", "-", stdin=json.dumps(HOST))
    assert code != 0 and "Forbidden" in out, out
    code, out = alice.kubectl("get", "sandboxhosts")
    assert code != 0 and "Forbidden" in out, out
    code, out = alice.kubectl(
        "patch", "sandbox", "mine", "-n", team, "--subresource=status", "--type=merge",
        "-p", '{"status":{"phase":"Running"}}',
    )  # fmt: skip
    assert code != 0 and "Forbidden" in out, out
    code, out = alice.kubectl("delete", "sandbox", "mine", "-n", team, "--wait=false")
    assert code == 0, out


def test_viewer_reads_sandboxes_and_changes_nothing(
    cluster: Cluster, core: kubernetes.client.CoreV1Api, people_roles: None, team: str
) -> None:
    cluster.apply({**sandbox("theirs", template="busybox", state="Stopped")}, "-n", team)
    bob = Person(cluster, core, team, "view")
    for verb in ("get", "list", "watch"):
        assert bob.can_i(verb, "sandboxes", "-n", team), verb
        assert bob.can_i(verb, "sandboxpools", "-n", team), verb
    for verb in ("create", "update", "patch", "delete"):
        assert not bob.can_i(verb, "sandboxes", "-n", team), verb
        assert not bob.can_i(verb, "sandboxpools", "-n", team), verb
    assert not bob.can_i("get", "sandboxhosts")
    for sub, verbs in GATEWAY_VERBS.items():
        for verb in verbs:
            assert not bob.may(verb, "subresources.tux.io", "sandboxes", sub, team), (sub, verb)
    code, out = bob.kubectl("get", "sandbox", "theirs", "-n", team, "-o", "name")
    assert (code, out.strip()) == (0, "sandbox.tux.io/theirs")
    code, out = bob.kubectl("delete", "sandbox", "theirs", "-n", team)
    assert code != 0 and "Forbidden" in out, out
    cluster.kubectl("delete", "sandbox", "theirs", "-n", team, "--wait=false")


def test_editor_sandbox_runs(
    cluster: Cluster,
    core: kubernetes.client.CoreV1Api,
    custom: kubernetes.client.CustomObjectsApi,
    people_roles: None,
    host: Host,
    namespace: str,
) -> None:
    """A Sandbox an editor creates with her token is run by the operator (as its own
    ServiceAccount) like any other."""
    carol = Person(cluster, core, namespace, "edit")
    code, out = carol.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        str(MANIFESTS / "samples" / "sandbox.yaml"),
    )
    assert code == 0, out
    body = wait_phase(custom, namespace, "visitor-42", "Running")
    assert body["status"]["host"] == host.name
    code, out = carol.kubectl(
        "wait", "--for=condition=Ready", "sandbox/visitor-42", "-n", namespace, "--timeout=30s"
    )
    assert code == 0, out


def test_the_prometheus_operator_overlay_adds_a_service_monitor_and_the_dashboard(
    cluster: Cluster,
) -> None:
    """Built, not applied: the API server here has no Prometheus operator CRDs. Everything
    else in it is the default overlay, which is applied above."""
    built = cluster.kubectl("kustomize", str(MANIFESTS / "overlays/prometheus-operator")).stdout
    objects = [o for o in yaml.safe_load_all(built) if o]
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"] == {"matchLabels": {"tux.io/metrics": "true"}}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    (dashboard,) = [o for o in objects if o["kind"] == "ConfigMap" and "tuxio.json" in o["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((MANIFESTS / "dashboards" / "tuxio.json").read_text())
    assert json.loads(dashboard["data"]["tuxio.json"]) == shipped
    selected = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Service" and o["metadata"].get("labels", {}).get("tux.io/metrics")
    }
    assert selected == {"tuxio-operator-metrics", "tuxio-gateway-metrics", "tuxio-agent-metrics"}
