"""The figures as a terminal table and as a chart (matplotlib, imported only to plot)."""

from __future__ import annotations

from pathlib import Path

from .stats import Figures

__all__ = ["plot", "table"]


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.4f}" if abs(value) >= 0.01 or value == 0 else f"${value:.7f}"


def table(f: Figures) -> str:
    rows: list[tuple[str, str]] = [
        ("period", f"{f.since:%Y-%m-%d %H:%M} .. {f.until:%Y-%m-%d %H:%M} UTC"),
        ("sandboxes", str(f.sandboxes)),
        ("visitors (active)", f"{f.visitors} ({f.active_visitors})"),
        ("daily visitors", ", ".join(f"{d}: {n}" for d, n in f.daily_visitors.items()) or "-"),
        ("peak concurrency", str(f.peak_concurrency)),
        ("sandbox-hours", f"{f.sandbox_hours:.3f}"),
        ("CPU-seconds", f"{f.cpu_seconds:.1f}"),
        ("hosts", str(f.hosts)),
        ("host CPU utilisation", f"{f.host_cpu_utilisation:.3%}"),
        ("host memory allocated", f"{f.host_memory_utilisation:.3%}"),
        ("host cost", _money(f.host_cost)),
        ("cost per active visitor", _money(f.cost_per_active_visitor)),
        ("cost per sandbox-hour", _money(f.cost_per_sandbox_hour)),
        (f"same usage at {f.per_second_name}", _money(f.per_second_cost)),
    ]
    if f.density_per_gib is not None:
        rows += [
            ("recorded density", f"{f.density_per_gib:.1f} sandboxes/GiB"),
            ("capacity per host", str(f.capacity_per_host)),
            ("cost per sandbox-hour, full", _money(f.cost_per_sandbox_hour_at_capacity)),
        ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def plot(f: Figures, path: Path, host_per_year: float) -> None:
    """Concurrency (a step line) and cumulative cost over time, host against per-second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    times = [f.since] + [at for at, _ in f.concurrency] + [f.until]
    counts = [0] + [n for _, n in f.concurrency] + [f.concurrency[-1][1] if f.concurrency else 0]
    top.step(times, counts, where="post")
    top.set_ylabel("sandboxes running")
    top.set_title("tuxio: concurrency and cost")
    at = [t for t, _, _ in f.cost_over_time]
    bottom.plot(
        at, [h for _, h, _ in f.cost_over_time], label=f"hosts (${host_per_year:,.0f}/year each)"
    )
    bottom.plot(at, [p for _, _, p in f.cost_over_time], label=f"same usage at {f.per_second_name}")
    bottom.set_ylabel("cost so far (USD)")
    bottom.legend()
    figure.autofmt_xdate()
    figure.savefig(path, dpi=100)
    plt.close(figure)
