"""Scans per second under concurrent clients, and the daemon's memory at idle and under load (``bench_load``)."""

from __future__ import annotations

from typing import Any

from bench_load import render_item_images, run_load


def measure(client_counts: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """One :func:`run_load` per client count on a fresh daemon: throughput, latency and resident memory.

    Returns ``{"runs": {clients: summary}, "rss_idle_mb", "rss_load_mb"}``; the
    memory figures come from the run with the most clients (idle: warm, before
    its clients start; load: the highest sample taken while they ran).
    """
    images = render_item_images()
    runs: dict[str, dict[str, Any]] = {}
    for clients in client_counts:
        result = run_load(clients, seconds, images=images)
        runs[str(clients)] = {
            key: result[key]
            for key in (
                "clients",
                "wall_s",
                "scans_completed",
                "scans_per_s",
                "latency_p50_s",
                "latency_p99_s",
                "scans_failed",
                "scans_lost",
                "rss_launch_mib",
                "rss_start_mib",
                "rss_peak_sampled_mib",
                "rss_hwm_mib",
                "rss_end_mib",
                "upload_bytes_per_scan",
            )
        }
        runs[str(clients)]["errors"] = result["errors"]
    heaviest = runs[str(max(client_counts))]
    return {
        "runs": runs,
        "rss_idle_mb": heaviest["rss_start_mib"],
        "rss_load_mb": heaviest["rss_peak_sampled_mib"],
    }
