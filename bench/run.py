"""Run Veriscope's benchmark suite; write bench/results.json and regenerate docs/benchmarks.md from it.

Run: ``make bench`` (or ``.venv/bin/python bench/run.py [--quick]``). Quick
mode (``--quick`` or ``VERISCOPE_BENCH_QUICK=1``) shortens every figure: load
runs of 5 s instead of 20 s and fewer repeats. ``--load-seconds`` sets the
load duration alone; ``--doc-only`` regenerates the document from the last
results without measuring.

Every headline figure is a ratio against a limit measured in the same run, or
a plain quantity against its target:

- ``pipeline_overhead_ratio``: p50 of the daemon's whole per-image path over
  p50 of one interpreter invoke times the invokes per image;
- ``analyze_scans_per_s``: ``analyze`` calls per second with 4 clients;
- ``upload_efficiency``: UploadImage MB/s of a 12 MP JPEG over loopback TCP MB/s;
- ``rss_idle_mb``, ``rss_load_mb``: daemon resident memory, warm and idle, and
  its peak under 16 clients;
- ``cold_start_s``: process spawn to a SERVING health check;
- ``flash_line_rate_ratio``: flash time of a full image over its bytes at 115200 8N1.

A figure that cannot be measured here is recorded as null with the reason;
the rest of the suite still runs. Asserts nothing; exits 0 unless writing fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common
import flash_serial
import inference_overhead
import load
import preview
import profile_path
import runtimes
import startup
import transfer

RESULTS = _common.ROOT / "bench" / "results.json"
DOC = _common.ROOT / "docs" / "benchmarks.md"
COMMAND = "make bench"

TARGETS: dict[str, tuple[str, float]] = {
    "pipeline_overhead_ratio": ("<=", 1.3),
    "upload_efficiency": (">=", 0.5),
    "rss_load_mb": ("<=", 200.0),
    "cold_start_s": ("<=", 3.0),
    "flash_line_rate_ratio": ("<=", 1.5),
}
"""This round's targets: key -> (comparison, bound)."""


def _run(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one figure, timing it; a failure becomes ``{"error": ...}`` so the others still run."""
    print(f"[bench] {name}...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"[bench] {name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return result


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def collect(quick: bool, load_seconds: float) -> dict[str, Any]:
    """Run every figure and assemble the results document (see the module docstring)."""
    repeat = 5 if quick else 20
    details: dict[str, Any] = {}
    details["inference"] = _run("inference overhead", lambda: inference_overhead.measure(repeat))
    details["runtimes"] = _run("runtimes", lambda: runtimes.measure(repeat * 5))
    details["profile"] = _run("profile of the per-image path", lambda: profile_path.measure(5 if quick else 20))
    details["load"] = _run("analyze load at 1, 4, 16 clients", lambda: load.measure((1, 4, 16), load_seconds))
    details["transfer"] = _run("upload transfer", lambda: transfer.measure(3 if quick else 10))
    details["preview"] = _run("preview", lambda: preview.measure((320, 640), 30 if quick else 90))
    details["startup"] = _run("cold start", lambda: startup.measure(3 if quick else 5))
    reason = flash_serial.unavailable()
    details["serial"] = (
        {"error": f"emulated board unavailable: {reason}"}
        if reason
        else _run("serial flash", lambda: flash_serial.measure(20 if quick else 100))
    )

    def pick(figure: str, key: str) -> Any:
        return details[figure].get(key)

    four = (details["load"].get("runs") or {}).get("4") or {}
    results: dict[str, Any] = {
        "pipeline_overhead_ratio": pick("inference", "pipeline_overhead_ratio"),
        "analyze_scans_per_s": four.get("scans_per_s"),
        "upload_efficiency": pick("transfer", "upload_efficiency"),
        "rss_idle_mb": pick("load", "rss_idle_mb"),
        "rss_load_mb": pick("load", "rss_load_mb"),
        "cold_start_s": pick("startup", "cold_start_s"),
        "flash_line_rate_ratio": pick("serial", "flash_line_rate_ratio"),
    }
    results["limits"] = {
        "pipeline_overhead_ratio": {
            "limit": "p50 of one interpreter invoke x invokes per image",
            "value_ms": pick("inference", "invoke_p50_ms"),
            "target": "<= 1.3",
        },
        "analyze_scans_per_s": {"limit": "none (throughput at 4 clients, reported)", "target": None},
        "upload_efficiency": {
            "limit": "raw loopback TCP throughput",
            "value_mb_per_s": pick("transfer", "loopback_mb_per_s"),
            "target": ">= 0.5",
        },
        "rss_idle_mb": {"limit": "none (reported)", "target": None},
        "rss_load_mb": {"limit": "target bound", "target": "<= 200"},
        "cold_start_s": {"limit": "target bound", "target": "<= 3"},
        "flash_line_rate_ratio": {
            "limit": "image bytes at 115200 baud 8N1 (bytes / 11520 s)",
            "value_s": pick("serial", "line_rate_limit_s"),
            "target": "<= 1.5",
        },
    }
    results["targets_met"] = {key: _met(results[key], *bound) for key, bound in TARGETS.items()}
    results["unmeasured"] = {
        name: figure["error"] for name, figure in details.items() if isinstance(figure, dict) and "error" in figure
    }
    results["details"] = details
    results["mode"] = "quick" if quick else "full"
    results["load_seconds"] = load_seconds
    results["machine"] = _machine()
    results["command"] = COMMAND
    return results


def _met(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return None
    return value <= bound if op == "<=" else value >= bound


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_doc(r: dict[str, Any]) -> str:
    """docs/benchmarks.md, generated from the results document."""
    d = r["details"]
    inf, tr, se, st = d["inference"], d["transfer"], d["serial"], d["startup"]
    runs = d["load"].get("runs", {})
    met = r["targets_met"]

    def verdict(key: str) -> str:
        return {True: "met", False: "**missed**", None: "not measured"}[met[key]] if key in met else "-"

    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/run.py from bench/results.json; edit the script, not this file. -->",
        "",
        "Reproduce with:",
        "",
        "```sh",
        f"{r['command']}                      # full run, about 10 minutes (the first also builds two venvs)",
        "VERISCOPE_BENCH_QUICK=1 make bench   # quick mode: 5 s load runs, fewer repeats",
        "```",
        "",
        f"This run: {r['mode']} mode ({r['load_seconds']:g} s per load run), "
        f"{r['machine']['cpu'] or r['machine']['machine']}, {r['machine']['cpu_count']} cores, "
        f"Python {r['machine']['python']}, load average {r['machine']['load_average']}, {r['machine']['date']}. "
        "The machine was shared, so absolute times are noisy; the ratios are taken against limits measured "
        "in the same run.",
        "",
        "## Headline figures",
        "",
        "| key | value | measured against | target | |",
        "|---|---|---|---|---|",
        f"| `pipeline_overhead_ratio` | {_fmt(r['pipeline_overhead_ratio'])} | one invoke, p50 "
        f"{_fmt(inf.get('invoke_p50_ms'))} ms | <= 1.3 | {verdict('pipeline_overhead_ratio')} |",
        f"| `analyze_scans_per_s` (4 clients) | {_fmt(r['analyze_scans_per_s'])} | - | - | - |",
        f"| `upload_efficiency` | {_fmt(r['upload_efficiency'], 4)} | loopback TCP "
        f"{_fmt(tr.get('loopback_mb_per_s'), 0)} MB/s | >= 0.5 | {verdict('upload_efficiency')} |",
        f"| `rss_idle_mb` | {_fmt(r['rss_idle_mb'], 0)} | - | - | - |",
        f"| `rss_load_mb` (16 clients) | {_fmt(r['rss_load_mb'], 0)} | - | <= 200 | {verdict('rss_load_mb')} |",
        f"| `cold_start_s` | {_fmt(r['cold_start_s'])} | - | <= 3 | {verdict('cold_start_s')} |",
        f"| `flash_line_rate_ratio` | {_fmt(r['flash_line_rate_ratio'])} | {_fmt(se.get('bytes_written'))} "
        f"bytes at 115200 8N1 = {_fmt(se.get('line_rate_limit_s'))} s | <= 1.5 | {verdict('flash_line_rate_ratio')} |",
        "",
        "## Definitions",
        "",
        "- **pipeline_overhead_ratio** = p50 of the whole per-image path / (p50 of one invoke x invokes per image). "
        "One invoke is a bare signature-runner call on the bundle's tile batch "
        f"({_fmt(inf.get('tiles_per_invoke'))} tiles of {_fmt(inf.get('tile_px'))} px; all tiles of a frame "
        f"go in one batch, so {_fmt(inf.get('invokes_per_image'))} invoke per image) on "
        f"{_fmt(inf.get('runtime'))} with {_fmt(inf.get('threads'))} threads. The whole path is what the scan "
        "service does per uploaded image: one decode, the quality gate, tiling, the invoke and raw outputs to an "
        "analysis (all at upload), and the item verdict at completion divided by its images. Images: "
        "three regions x (PNG, JPEG) of a simulated item at 2028 x 1520. A ratio of 1 would mean the daemon adds "
        "nothing beyond the necessary invokes.",
        "- **analyze_scans_per_s**: whole `analyze` calls (create a scan, upload six images, complete) per second "
        "over gRPC with 4 concurrent SDK clients against a fresh `veriscope-device serve --simulate` "
        "(device/bench/bench_load.py `run_load`).",
        "- **upload_efficiency** = UploadImage MB/s of a 12 MP (4056 x 3040) q92 JPEG, timed client-side around "
        "the whole call, / MB/s of one raw TCP stream over 127.0.0.1 (best of three 512 MiB transfers). The "
        "gRPC ceiling beside it streams the same bytes in the same 1 MiB messages to a gRPC server (its own "
        "process) that only counts them.",
        "- **rss_idle_mb**: daemon VmRSS when warm (one scan done) and idle, before the 16-client run; "
        "**rss_load_mb**: highest VmRSS sampled every 0.25 s during the 16-client run. MiB.",
        "- **cold_start_s**: median, over fresh daemons on fresh data directories, of the time from spawning "
        "the process to the gRPC health check answering SERVING.",
        "- **flash_line_rate_ratio** = time to flash a full application image (the built firmware padded to the "
        "bootloader, 0x7E00 bytes) through Optiboot on the emulated board / (bytes / 11520 s), the line rate "
        "of 115200 baud 8N1. The flash writes every page and reads every page back, so a write-then-verify "
        "flash cannot go below 2.0 on this definition; the write phase alone is shown below.",
        "",
        "## Inference path (per image)",
        "",
        f"Whole path p50 {_fmt(inf.get('path_p50_ms'))} ms, p95 {_fmt(inf.get('path_p95_ms'))} ms; "
        f"one invoke p50 {_fmt(inf.get('invoke_p50_ms'))} ms, p95 {_fmt(inf.get('invoke_p95_ms'))} ms.",
        "",
        "| part | p50 ms |",
        "|---|---|",
    ]
    lines += [f"| {name.replace('_', ' ')} | {_fmt(ms)} |" for name, ms in (inf.get("parts_p50_ms") or {}).items()]
    lines += ["", "## Scans over gRPC (`analyze`, 3 regions, 6 images)", ""]
    lines += ["| clients | scans/s | p50 s | p99 s | failed | lost | peak RSS MiB |", "|---|---|---|---|---|---|---|"]
    for clients, run in runs.items():
        lines.append(
            f"| {clients} | {_fmt(run['scans_per_s'])} | {_fmt(run['latency_p50_s'])} | "
            f"{_fmt(run['latency_p99_s'])} | {run['scans_failed']} | {run['scans_lost']} | "
            f"{_fmt(run['rss_peak_sampled_mib'], 0)} |"
        )
    if "error" in d["load"]:
        lines.append(f"\nNot measured: {d['load']['error']}")
    lines += ["", "## Transfer", ""]
    if "error" in tr:
        lines.append(f"Not measured: {tr['error']}")
    else:
        lines += [
            f"UploadImage of a {tr['jpeg_bytes'] / 1e6:.2f} MB 12 MP JPEG: p50 {_fmt(tr['upload_p50_ms'], 0)} ms, "
            f"{_fmt(tr['upload_mb_per_s'])} MB/s; raw loopback TCP {_fmt(tr['loopback_mb_per_s'], 0)} MB/s. "
            f"Server-side parts timed in-process on the same image: decode {_fmt(tr['server_decode_ms'], 0)} ms, "
            f"quality gate {_fmt(tr['server_quality_gate_ms'], 0)} ms.",
        ]
    lines += ["", "## Preview (`StreamPreview`, asked for 30 fps, simulated 2028 x 1520 sensor)", ""]
    lines += ["| width px | fps delivered | latency p50 ms | latency p95 ms | slots skipped |", "|---|---|---|---|---|"]
    for width, p in d["preview"].items():
        if isinstance(p, dict):
            lines.append(
                f"| {width} | {_fmt(p['fps'], 1)} | {_fmt(p['latency_p50_ms'], 1)} | "
                f"{_fmt(p['latency_p95_ms'], 1)} | {p['slots_skipped']} |"
            )
    lines += [
        "",
        "Latency is arrival at the client minus the frame's `capture_time` (same clock); it covers encoding and "
        "delivery after the frame is stamped.",
        "",
        "## Footprint",
        "",
        f"Cold start runs: {', '.join(f'{s:.2f} s' for s in st.get('runs_s', [])) or 'not measured'}. "
        f"Idle RSS {_fmt(r['rss_idle_mb'], 0)} MiB; under 16 clients peak {_fmt(r['rss_load_mb'], 0)} MiB "
        f"(VmHWM {_fmt((runs.get('16') or {}).get('rss_hwm_mib'), 0)} MiB).",
        "",
        "## Serial (emulated ATmega328P, Optiboot, 115200 baud)",
        "",
    ]
    if "error" in se:
        lines.append(f"Not measured: {se['error']}")
    else:
        lines += [
            f"Flash of {se['bytes_written']} bytes ({se['pages']} pages, {se['retries']} retries): "
            f"{_fmt(se['flash_s'])} s in all, of which writing {_fmt(se['write_s'])} s; line-rate limit "
            f"{_fmt(se['line_rate_limit_s'])} s. Ratio {_fmt(se['flash_line_rate_ratio'])} whole, "
            f"{_fmt(se['write_line_rate_ratio'])} write phase alone. One controller command (PING) round trip: "
            f"p50 {_fmt(se['command_rtt_p50_ms'])} ms, p95 {_fmt(se['command_rtt_p95_ms'])} ms.",
        ]
    lines += _runtimes_section(d["runtimes"], inf)
    lines += _profile_section(d.get("profile") or {})
    lines += ["", "## Where targets are missed", ""]
    missed = [key for key, ok in met.items() if ok is False]
    if not missed:
        lines.append("None in this run.")
    for key in missed:
        lines.append(f"- **{key}** ({_fmt(r[key], 4)}, target {TARGETS[key][0]} {TARGETS[key][1]:g}): {_cause(key, r)}")
    if r["unmeasured"]:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- {name}: {why}" for name, why in r["unmeasured"].items()]
    return "\n".join(lines) + "\n"


def _profile_section(profile: dict[str, Any]) -> list[str]:
    """Where the per-image path spends its time, from the py-spy samples (bench/profile_path.py)."""
    lines = ["", "## Profile of the per-image path (py-spy)", ""]
    if profile.get("measured") is False or "steps_pct" not in profile:
        return [*lines, f"Not measured: {profile.get('reason') or profile.get('error') or 'no data'}."]

    def pct(shares: dict[str, float]) -> str:
        return ", ".join(f"{name} {value:g} %" for name, value in shares.items())

    return [
        *lines,
        f"{profile['samples']} samples (200 Hz, native frames included) of `bench/profile_path.py` looping over "
        "the same images as the overhead figure; shares of the whole path:",
        "",
        f"- steps: {pct(profile['steps_pct'])};",
        f"- inside the analysis: {pct(profile['analysis_pct'])} (run_tiles is the invoke and dequantising its "
        "outputs; to_work_scale the resampling to the model's width);",
        f"- inside the quality gate: {pct(profile['gate_pct'])}.",
        "",
        "Reproduce with `pip install py-spy`, then `py-spy record --native -f speedscope -o path.json -- "
        ".venv/bin/python bench/profile_path.py 20`.",
    ]


def _runtimes_section(runtimes: dict[str, Any], inf: dict[str, Any]) -> list[str]:
    """The runtimes table: each runtime's timings per thread count and its agreement with ai-edge-litert."""
    lines = ["", "## Runtimes (same model, one tile batch)", ""]
    if "error" in runtimes:
        return [*lines, f"Not measured: {runtimes['error']}"]
    reference = runtimes.get("ai-edge-litert") or {}
    threads = [key for key in reference if key.endswith("_threads")]
    head = ["runtime", "version"] + [f"{t.split('_')[0]} thread(s) p50 / p95 ms" for t in threads]
    lines += [
        "| " + " | ".join([*head, "p50 / ai-edge-litert p50", "largest output difference from ai-edge-litert"]) + " |",
        "|" + "---|" * (len(head) + 2),
    ]
    for name, rt in runtimes.items():
        if not isinstance(rt, dict):
            continue
        if rt.get("measured") is False:
            reason = " ".join(str(rt["reason"]).split()).replace("|", "\\|")
            reason = reason if len(reason) <= 400 else reason[:400] + "... (full reason in bench/results.json)"
            lines.append(f"| {name} | not measured: {reason} |" + " |" * (len(threads) + 2))
            continue
        cells = [name, str(rt.get("version", "-"))]
        cells += [f"{_fmt(rt[t]['p50_ms'])} / {_fmt(rt[t]['p95_ms'])}" if t in rt else "-" for t in threads]
        ratios = rt.get("p50_ratio_vs_litert") or {}
        cells.append(
            ", ".join(f"{_fmt(ratios[t])} ({t.split('_')[0]})" for t in threads if t in ratios) or "1 (itself)"
        )
        diffs = rt.get("max_abs_diff_vs_litert")
        if diffs is None:
            cells.append("-")
        else:
            cells.append(
                "; ".join(
                    f"{output} {_fmt(v['dequantised'], 3)} ({v['steps']:g} step{'' if v['steps'] == 1 else 's'})"
                    if isinstance(v, dict)
                    else f"{output}: {v}"
                    for output, v in diffs.items()
                )
            )
        lines.append("| " + " | ".join(cells) + " |")
    converters = [
        f"{name} runs the model converted by {rt['converter']}"
        for name, rt in runtimes.items()
        if isinstance(rt, dict) and "converter" in rt
    ]
    lines += [
        "",
        f"One invoke of the bundled int8 model on a batch of {_fmt(inf.get('tiles_per_invoke'))} random tiles, the "
        "same batch for every runtime, each in its own venv: ai-edge-litert in `.venv`; tflite-runtime in the "
        "Raspberry Pi OS venv of `requirements-pi.lock` (numpy < 2); onnxruntime beside tf2onnx and TensorFlow in a "
        "venv of pinned versions under `build/`. The ratio is p50 over ai-edge-litert's p50 at the same thread "
        "count in the same run. Output differences are in the outputs' own units (logits, embedding), with the "
        "number of int8 quantisation steps they make; the runtimes' int8 kernels round differently."
        + (" " + "; ".join(converters) + "." if converters else ""),
    ]
    return lines


def _cause(key: str, r: dict[str, Any]) -> str:
    """The measured cause of a missed target, from the parts timed in the same run."""
    d = r["details"]
    if key == "pipeline_overhead_ratio":
        parts = d["inference"]["parts_p50_ms"]
        return (
            f"the invoke is small ({_fmt(parts['invoke'])} ms for the tile batch) next to the image work around it: "
            f"decoding the 3 MP frame ({_fmt(parts['decode'])} ms), the quality gate at full resolution "
            f"({_fmt(parts['quality_gate'])} ms) and tiling ({_fmt(parts['tiling'])} ms, resampling the full frame "
            "to the model's working width). Each image is now decoded once: it is analysed at upload, while the "
            "gate has it decoded, and completion reuses that analysis (it used to decode every image again). "
            "The limit itself is fixed by the model's budget: its int8 invoke is sized for a quarter of "
            "MobileNetV2's Pi 4 time, about 4 ms, and decoding a 3 MP frame alone takes longer than that with "
            "libjpeg-turbo or zlib, so a ratio of 1.3 would need the gate and the decode to shrink by an order of "
            "magnitude (a reduced-scale decode the gate could not judge focus on)."
        )
    if key == "upload_efficiency":
        t = d["transfer"]
        ceiling = (
            f" Even with no processing at all the target is out of reach over gRPC here: the same bytes streamed "
            f"to a gRPC server that only counts them move at {_fmt(t['grpc_ceiling_mb_per_s'], 0)} MB/s, "
            f"{_fmt(t['grpc_ceiling_efficiency'], 3)} of loopback TCP, measured in the same run."
            if "grpc_ceiling_mb_per_s" in t
            else ""
        )
        return (
            f"UploadImage answers only after the daemon has hashed, decoded ({_fmt(t['server_decode_ms'], 0)} ms), "
            f"quality-gated ({_fmt(t['server_quality_gate_ms'], 0)} ms) and analysed the 12 MP image and stored "
            f"it, so the {_fmt(t['upload_p50_ms'], 0)} ms call is mostly processing, not transport; its answer "
            f"carries the image's quality report, which the guided capture needs before the next image.{ceiling}"
        )
    if key == "flash_line_rate_ratio":
        s = d["serial"]
        return (
            f"the flash writes and then reads back every page over the same half-duplex exchange, so twice the "
            f"image crosses the line: the write phase alone runs at {_fmt(s['write_line_rate_ratio'])} x the line "
            "rate, the verify pass adds as much again. The flasher must read every page back (the flashing "
            "contract), and Optiboot answers one command at a time at a fixed 115200 baud with no checksum "
            "command, so a verified flash cannot go below 2.0; within 1.5 would need a bootloader with a CRC "
            "command or a faster baud."
        )
    if key == "rss_load_mb":
        peaks = ", ".join(
            f"{run['rss_peak_sampled_mib']:.0f} MiB at {clients}" for clients, run in d["load"]["runs"].items()
        )
        return (
            f"resident memory rises with the scans in flight ({peaks} clients; idle {r['rss_idle_mb']:.0f} MiB): "
            "each image being judged is held decoded (9 MiB as uint8) plus the gate's and tiling's working "
            "copies. The daemon now bounds malloc arenas and maps frame-sized blocks on their own (returned on "
            "free), and spools waiting uploads to disk instead of holding them in memory."
        )
    if key == "cold_start_s":
        return "start-up (imports, model load, store open) exceeds the bound; not profiled in this round."
    return "not profiled in this round."


def main(argv: list[str] | None = None) -> int:
    """Run the suite from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("VERISCOPE_BENCH_QUICK", "") not in ("", "0"),
        help="short runs (also VERISCOPE_BENCH_QUICK=1)",
    )
    parser.add_argument("--load-seconds", type=float, help="seconds per load run (default 20, quick 5)")
    parser.add_argument(
        "--doc-only", action="store_true", help="measure nothing: regenerate docs/benchmarks.md from bench/results.json"
    )
    args = parser.parse_args(argv)
    if args.doc_only:
        DOC.write_text(render_doc(json.loads(RESULTS.read_text())))
        return 0
    load_seconds = args.load_seconds or (5.0 if args.quick else 20.0)
    results = collect(args.quick, load_seconds)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render_doc(results))
    headline = {k: results[k] for k in (*TARGETS, "analyze_scans_per_s", "rss_idle_mb")}
    print(json.dumps({"results": headline, "targets_met": results["targets_met"]}, indent=2))
    print(f"wrote {RESULTS.relative_to(_common.ROOT)} and {DOC.relative_to(_common.ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
