"""`tuxio-agent`: serve the API, build templates, make development credentials."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import ssl
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from tuxio.common.metrics import register_build_info, serve_metrics

from . import __version__
from .budget import OutputBudget
from .cgroups import detect_driver
from .credentials import CredentialsError, ServingCertificate, TokenFile
from .disk import BACKENDS, DiskQuota, Ext4ImageBackend, backend_named
from .disk_usage import DiskUsage
from .errors import AgentError, HostPrerequisiteMissing, TemplateBuildFailed
from .files import ContainerFiles
from .host import apparmor_enabled, ensure_subordinate_ids, ensure_traversable, host_cpus
from .lxc import Lxc
from .records import RecordCorrupt, read_record
from .sandbox_collector import SandboxCollector
from .service import ContainerService, DiskPolicy
from .settings import AgentSettings
from .templates import BUILDERS, TemplateStore
from .terminals import SessionLimits, SessionTable

if TYPE_CHECKING:
    import uvicorn

__all__ = ["build_service", "build_sessions", "main"]

log = logging.getLogger("tuxio.nodeagent")

_LXC_TOOLS = ("lxc-start", "lxc-stop", "lxc-info", "lxc-ls", "lxc-attach", "lxc-destroy")
# util-linux's setsid gives a terminal's lxc-attach its session and controlling terminal.
_HOST_TOOLS = ("setsid",)


def build_service(settings: AgentSettings) -> ContainerService:
    """The container service for these settings, after checking the host can run it."""
    missing = [tool for tool in _LXC_TOOLS if shutil.which(tool) is None]
    if missing:
        raise HostPrerequisiteMissing(
            f"missing LXC tools: {', '.join(missing)} (apt-get install lxc)"
        )
    missing = [tool for tool in _HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise HostPrerequisiteMissing(
            f"missing tools: {', '.join(missing)} (apt-get install util-linux)"
        )
    if os.geteuid() != 0:
        raise HostPrerequisiteMissing("tuxio-agent manages LXC containers and must run as root")
    ensure_subordinate_ids(settings.idmap_base, settings.idmap_size)
    settings.lxcpath.mkdir(parents=True, exist_ok=True)
    settings.templates_dir.mkdir(parents=True, exist_ok=True)
    for directory in (settings.lxcpath, settings.templates_dir):
        ensure_traversable(directory, owned=settings.data_dir)
    backends = {name: backend_named(name, settings.data_dir, settings.lxcpath) for name in BACKENDS}
    chosen = backends[settings.disk_backend]
    chosen.check_host()
    default = DiskQuota(settings.disk_default_bytes, settings.disk_default_inodes)
    if isinstance(chosen, Ext4ImageBackend):
        # The default size's pristine image made now, beside serving rather than before it
        # (mkfs takes a while on a busy host), so the first create rarely waits for it.
        threading.Thread(
            target=chosen.pristine, args=(default, settings.idmap_base), daemon=True
        ).start()
    return ContainerService(
        lxc=Lxc(settings.lxcpath),
        disk=DiskPolicy(chosen, default, settings.disk_reserve_bytes, settings.disk_reserve_inodes),
        other_disk_backends=list(backends.values()),
        cgroups=detect_driver(),
        templates=_templates(settings),
        cpus=host_cpus(settings.reserved_cpus),
        idmap_base=settings.idmap_base,
        idmap_size=settings.idmap_size,
        apparmor=apparmor_enabled(),
        stop_timeout=settings.stop_timeout_seconds,
        output_budget=OutputBudget(settings.output_budget_bytes),
    )


def build_sessions(settings: AgentSettings, service: ContainerService) -> SessionTable:
    """The session table for these settings, over the service's containers."""
    limits = SessionLimits(
        per_container=settings.sessions_per_container,
        per_agent=settings.sessions_per_agent,
        idle_seconds=settings.session_idle_seconds,
        grace_seconds=settings.session_grace_seconds,
        hangup_seconds=settings.session_hangup_seconds,
        buffer_bytes=settings.session_buffer_bytes,
        replay_bytes=settings.session_replay_bytes,
    )
    return SessionTable(
        service.lxc, limits, service.processes, service.session_cgroup, service.output_budget
    )


def _templates(settings: AgentSettings) -> TemplateStore:
    return TemplateStore(settings.templates_dir, settings.idmap_base, settings.idmap_size)


def _tls_context(settings: AgentSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise HostPrerequisiteMissing(f"cannot load {settings.tls_cert}: {exc}") from exc
    return context


def _serve(settings: AgentSettings) -> int:
    import uvicorn

    from .api import create_app

    try:
        tokens = TokenFile(settings.token_file)
    except (OSError, CredentialsError) as exc:
        raise HostPrerequisiteMissing(
            f"{exc} (make one with 'tuxio-agent token generate', or have the bootstrap "
            "write it: 'tuxio-agent credentials bootstrap')"
        ) from exc
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise HostPrerequisiteMissing("TLS needs both a certificate and a key")
    service = build_service(settings)
    # One TLS context, made here rather than by uvicorn: the certificate is loaded into it
    # again when the bootstrap renews it (a rotation without a restart).
    context = _tls_context(settings)
    certificate = (
        ServingCertificate(context, settings.tls_cert, settings.tls_key)
        if context is not None and settings.tls_cert and settings.tls_key
        else None
    )
    app = create_app(
        service,
        tokens,
        settings.burst_poll_seconds,
        sessions=build_sessions(settings, service),
        files=ContainerFiles(settings.idmap_base, settings.file_max_bytes),
        certificate=certificate,
    )
    config = uvicorn.Config(
        app,
        host=settings.listen,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        access_log=settings.access_log,
        log_level=settings.log_level.lower(),
        # The default loop: uvloop spawns subprocesses with fork(), 3x slower than
        # asyncio's vfork path, and the lxc tools are on every hot path.
        loop="asyncio",
        http="httptools",
        # The sans-I/O protocol: a send waits while the transport's buffer is full, which is
        # how a slow client slows a session's reading. No compression: the agent's peers are
        # gateways on the host network, and a flood would cost a core to deflate.
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )
    config.load()
    if context is not None:
        config.ssl = context
    scheme = "https" if settings.tls_cert else "http"
    log.info(
        "tuxio-agent %s serving %s://%s:%d, LXC path %s",
        __version__,
        scheme,
        settings.listen,
        settings.port,
        settings.lxcpath,
    )
    asyncio.run(_serve_with_metrics(uvicorn.Server(config), settings, service))
    return 0


async def _serve_with_metrics(
    server: uvicorn.Server, settings: AgentSettings, service: ContainerService
) -> None:
    """The API, and beside it the /metrics listener and the walk of the writable layers."""
    if not settings.metrics_port:
        await server.serve()
        return
    # Metrics keep five cgroup files open per running container: the soft limit on open
    # files goes up to the hard one (the containers' own limits are set by their config).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    disk = DiskUsage(settings.lxcpath, settings.disk_usage_seconds)
    # Thousands of series: written by the fast renderer, after the registry's.
    sandboxes = SandboxCollector(service, disk)
    register_build_info("agent", __version__)
    walker = asyncio.create_task(disk.run(lambda: list(service.records)), name="disk usage")
    try:
        async with serve_metrics(
            settings.metrics_listen, settings.metrics_port, REGISTRY, fast=[sandboxes.render]
        ):
            log.info(
                "metrics on http://%s:%d/metrics", settings.metrics_listen, settings.metrics_port
            )
            await server.serve()
    finally:
        walker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await walker


def _template_build(settings: AgentSettings, name: str, options: dict[str, str]) -> int:
    if options and name != "debian":
        raise TemplateBuildFailed("--suite, --mirror and --cache-dir apply to the debian template")
    store = _templates(settings)
    template = store.build(name, **options)
    in_use: set[Path] = set()
    unknown = False
    if settings.lxcpath.is_dir():
        for entry in settings.lxcpath.iterdir():
            try:
                record = read_record(entry) if entry.is_dir() else None
            except RecordCorrupt as exc:
                # Which template it uses is unknown: prune nothing rather than its root.
                log.warning("not pruning templates: %s", exc)
                unknown = True
                continue
            if record is not None:
                in_use.add(record.template_rootfs)
    for pruned in [] if unknown else store.prune(in_use):
        log.info("pruned unused template version %s", pruned)
    print(
        json.dumps(
            {
                "name": template.name,
                "rootfs": str(template.rootfs),
                "sizeBytes": template.size_bytes,
            }
        )
    )
    return 0


def _template_list(settings: AgentSettings) -> int:
    for template in _templates(settings).all():
        print(
            f"{template.name}\t{template.built_at.isoformat()}\t{template.size_bytes}\t{template.rootfs}"
        )
    return 0


def _token_generate(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    print(path)
    return 0


def _tls_generate(
    cert: Path,
    key: Path,
    hosts: list[str],
    days: int,
    ca_cert: Path | None,
    ca_key: Path | None,
) -> int:
    from .tls import make_self_signed, make_signed

    if ca_cert is not None and ca_key is not None:
        make_signed(cert, key, hosts, ca_cert, ca_key, days)
    elif ca_cert is None and ca_key is None:
        make_self_signed(cert, key, hosts, days)
    else:
        raise HostPrerequisiteMissing("--ca-cert and --ca-key go together")
    print(json.dumps({"cert": str(cert), "key": str(key), "hosts": hosts}))
    return 0


def _credentials_bootstrap(args: argparse.Namespace) -> int:
    from .bootstrap import BootstrapSettings, bootstrap, renew_forever

    hosts = tuple(args.host)
    if args.api_server:
        if args.api_token_file is None:
            raise HostPrerequisiteMissing("--api-server needs --api-token-file")
        settings = BootstrapSettings(
            args.dir, hosts, args.api_server, args.api_token_file, args.api_ca,
            args.seconds, args.timeout,
        )  # fmt: skip
    else:
        settings = BootstrapSettings.in_cluster(args.dir, hosts, args.credentials_dir)
        settings = BootstrapSettings(
            settings.out_dir, hosts, settings.api_server, settings.token_file,
            settings.api_ca_file, args.seconds, args.timeout,
        )  # fmt: skip
    if args.renew:
        renew_forever(settings)
    issued = bootstrap(settings)
    print(json.dumps({"request": issued.request, "notAfter": issued.not_after.isoformat()}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuxio-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--data-dir", type=Path, help="overrides TUXIO_AGENT_DATA_DIR")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--listen")
    serve.add_argument("--port", type=int)
    serve.add_argument("--token-file", type=Path)
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--reserved-cpus", type=int)
    serve.add_argument("--access-log", action="store_true", default=None)

    template = commands.add_parser("template", help="build and list templates")
    template_commands = template.add_subparsers(dest="template_command", required=True)
    build = template_commands.add_parser("build", help="build a template")
    build.add_argument("name", choices=sorted(BUILDERS))
    build.add_argument("--suite", help="Debian suite (debian only)")
    build.add_argument("--mirror", help="Debian mirror URL (debian only)")
    build.add_argument("--cache-dir", help="where debootstrap keeps packages (debian only)")
    template_commands.add_parser("list", help="list the templates present")

    token = commands.add_parser("token", help="bearer tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    generate = token_commands.add_parser("generate", help="write a new random token (0600)")
    generate.add_argument("--out", type=Path, default=Path("/etc/tuxio/agent-token"))

    credentials = commands.add_parser("credentials", help="the agent's certificate and token")
    credentials_commands = credentials.add_subparsers(dest="credentials_command", required=True)
    boot = credentials_commands.add_parser(
        "bootstrap",
        help="ask the cluster for a serving certificate and this host's token (a "
        "CertificateSigningRequest of signer tux.io/agent-serving); --renew: keep renewing",
    )
    boot.add_argument("--dir", type=Path, required=True, help="where tls.crt/tls.key/token go")
    boot.add_argument("--host", action="append", required=True, help="name or address (repeat)")
    boot.add_argument("--api-server", help="API server URL; default: the pod's cluster")
    boot.add_argument(
        "--api-token-file", type=Path, help="a ServiceAccount token bound to this host's pod"
    )
    boot.add_argument("--api-ca", type=Path, help="PEM CA of the API server")
    boot.add_argument(
        "--credentials-dir",
        type=Path,
        help="in a pod: the projected token and ca.crt (default /var/run/secrets/tokens/bootstrap)",
    )
    boot.add_argument("--seconds", type=int, default=7 * 24 * 3600, help="certificate life asked")
    boot.add_argument("--timeout", type=float, default=300.0, help="wait for the signature")
    boot.add_argument("--renew", action="store_true", help="renew forever (the sidecar)")

    tls = commands.add_parser("tls", help="TLS for development")
    tls_commands = tls.add_subparsers(dest="tls_command", required=True)
    self_signed = tls_commands.add_parser(
        "generate", help="make a self-signed certificate, or one signed by --ca-cert/--ca-key"
    )
    self_signed.add_argument("--cert", type=Path, required=True)
    self_signed.add_argument("--key", type=Path, required=True)
    self_signed.add_argument(
        "--host",
        action="append",
        default=None,
        help="DNS name or IP address (repeat); default localhost, 127.0.0.1",
    )
    self_signed.add_argument("--days", type=int, default=365)
    self_signed.add_argument("--ca-cert", type=Path, help="PEM certificate of the issuing CA")
    self_signed.add_argument("--ca-key", type=Path, help="PEM private key of the issuing CA")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "data_dir": args.data_dir,
            "listen": getattr(args, "listen", None),
            "port": getattr(args, "port", None),
            "token_file": getattr(args, "token_file", None),
            "tls_cert": getattr(args, "tls_cert", None),
            "tls_key": getattr(args, "tls_key", None),
            "reserved_cpus": getattr(args, "reserved_cpus", None),
            "access_log": getattr(args, "access_log", None),
        }.items()
        if value is not None
    }
    settings = AgentSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "template" and args.template_command == "build":
            given = (("suite", args.suite), ("mirror", args.mirror), ("cache_dir", args.cache_dir))
            options = {k: v for k, v in given if v}
            return _template_build(settings, args.name, options)
        if args.command == "template":
            return _template_list(settings)
        if args.command == "token":
            return _token_generate(args.out)
        if args.command == "credentials":
            return _credentials_bootstrap(args)
        return _tls_generate(
            args.cert,
            args.key,
            args.host or ["localhost", "127.0.0.1"],
            args.days,
            args.ca_cert,
            args.ca_key,
        )
    except AgentError as exc:
        print(f"tuxio-agent: {exc.reason}: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
