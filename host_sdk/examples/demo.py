"""The Veriscope demo: a simulated unit scans one genuine and one counterfeit item.

Run it with ``make demo`` (or ``.venv/bin/python host_sdk/examples/demo.py``).
It starts ``veriscope-device serve --simulate`` on a free loopback port with a
throw-away data directory, places a genuine and then a counterfeit virtual
wallet under the simulated lens, runs the guided scan of every region through
the SDK, prints both verdicts, and stops the unit.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from veriscope.device.launch import spawn_daemon
from veriscope.sdk import Client, ScanEvent, ScanEventType

# A wallet (printed canvas and leather): the first demo model verifies both materials. Its woven-fabric
# head does not yet verify genuine fabric, so a tote (with a fabric lining) comes out UNVERIFIED.
ITEM_TYPE = "wallet-compact"
ITEMS = [("genuine", 11), ("counterfeit-a", 11)]


def _progress(event: ScanEvent) -> None:
    """Print the scan's progress as it happens."""
    if event.type is ScanEventType.CAPTURING:
        print(f"      capturing {event.region} ...", flush=True)
    elif event.type in (ScanEventType.RETAKE_REQUESTED, ScanEventType.RETAKES_EXHAUSTED):
        print(f"      retake {event.region}: {event.message}", flush=True)
    elif event.type is ScanEventType.ANALYZING:
        print("      analyzing ...", flush=True)


def main() -> int:
    """Run the demo; returns the process exit code."""
    with tempfile.TemporaryDirectory(prefix="veriscope-demo-") as tmp:
        print("Starting a simulated Veriscope unit ...", flush=True)
        unit = spawn_daemon(Path(tmp) / "data")
        verdicts: list[tuple[str, str]] = []
        try:
            with Client(unit.address) as client:
                device = client.get_device()
                model = f"{device.model.name} {device.model.version}" if device.model else "none"
                print(f"Unit {device.device_id} at {unit.address}, model {model}")
                for n, (source, seed) in enumerate(ITEMS, start=1):
                    print(f"[{n}/{len(ITEMS)}] {ITEM_TYPE} from source '{source}' (seed {seed})", flush=True)
                    client.place_item(ITEM_TYPE, source, seed)
                    result = client.scan(ITEM_TYPE, on_event=_progress)
                    reason = f" ({result.reason.value})" if result.reason else ""
                    print(f"    verdict: {result.verdict.value}{reason}, score {result.score:.3f}")
                    for region in result.regions:
                        score = "n/a" if region.score is None else f"{region.score:.3f}"
                        why = region.explanations[0] if region.explanations else ""
                        print(f"      {region.region:<8} score {score}  {why}")
                    verdicts.append((source, result.verdict.value))
        finally:
            code = unit.stop()
        print(f"Unit stopped (exit code {code}).")
        print("Summary: " + ", ".join(f"{source} -> {verdict}" for source, verdict in verdicts))
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
