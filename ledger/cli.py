"""`tuxio`: the platform's own command line; `tuxio stats` reads the usage ledger."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from tuxio.common.timeutil import parse_time

from .pricing import E2B, SEED_HOST, HostCost
from .stats import figures
from .stats_report import plot, table
from .store import Ledger

__all__ = ["main"]

DEFAULT_URL = "sqlite:////var/lib/tuxio/ledger.sqlite3"
DEFAULT_DENSITY = Path(__file__).resolve().parent.parent / "bench" / "results" / "density.json"


def _time(text: str) -> datetime:
    try:
        return parse_time(text if "T" in text or ":" in text else text + "T00:00:00Z")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc


def _density(path: Path | None) -> float | None:
    """Sandboxes per GiB as bench/density.py recorded it, if it did."""
    if path is None or not path.exists():
        return None
    recorded = json.loads(path.read_text())
    value = recorded.get("sandboxes_per_gib")
    return float(value) if value else None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="tuxio", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="usage and cost from the ledger")
    stats.add_argument(
        "--ledger",
        default=os.environ.get("TUXIO_OPERATOR_LEDGER_URL", DEFAULT_URL),
        help="the ledger's URL (default: $TUXIO_OPERATOR_LEDGER_URL, else %(default)s)",
    )
    stats.add_argument("--since", type=_time, help="start of the period (default: the first)")
    stats.add_argument("--until", type=_time, help="end of the period (default: now)")
    stats.add_argument(
        "--host-cost-per-year",
        type=float,
        default=SEED_HOST.per_year,
        help="what one host costs a year, USD (default %(default)s: the seed's 32 GB server)",
    )
    stats.add_argument("--host-cores", type=int, default=SEED_HOST.cores)
    stats.add_argument("--host-memory-gib", type=float, default=SEED_HOST.memory_gib)
    stats.add_argument(
        "--density",
        type=Path,
        default=DEFAULT_DENSITY,
        help="bench/density.py's result, for the cost at full density (default %(default)s)",
    )
    stats.add_argument("--json", action="store_true", help="the figures as JSON")
    stats.add_argument("--plot", type=Path, metavar="FILE.png", help="chart concurrency and cost")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    host = HostCost(args.host_cost_per_year, args.host_cores, args.host_memory_gib)
    ledger = Ledger.open(args.ledger, migrate=False)
    try:
        sandboxes, events = ledger.sandboxes(), ledger.events()
    except SQLAlchemyError as exc:
        print(f"tuxio stats: cannot read the ledger at {args.ledger}: {exc}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    found = figures(
        sandboxes,
        events,
        host,
        E2B,
        since=args.since,
        until=args.until,
        density_per_gib=_density(args.density),
    )
    if args.plot:
        plot(found, args.plot, host.per_year)
    if args.json:
        print(json.dumps(found.as_json(), indent=2))
    else:
        print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
