"""`tuxio-operator`: run the kopf operator for Sandbox, SandboxPool and SandboxHost."""

from __future__ import annotations

import argparse
import sys

import kopf

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tuxio-operator", description=__doc__)
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf's health endpoint (for liveness and readiness probes); '' turns it off",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only these namespaces (repeat); default: the whole cluster",
    )
    args = parser.parse_args(argv)

    from . import handlers  # registers the handlers with kopf
    from .node_handlers import register
    from .settings import OperatorSettings

    del handlers
    register(OperatorSettings())  # node registration, when TUXIO_OPERATOR_NODE_HOSTS is set
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    namespaces: list[str] = args.namespace
    kopf.run(
        # One replica with a Recreate rollout: there is never a second operator to peer with.
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
