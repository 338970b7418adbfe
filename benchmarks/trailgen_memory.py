"""The trail generator's peak memory at 100,000 and 1,000,000 events, side by side.

tests/unit/test_trailgen.py checks that memory stays flat from 10,000 to 100,000 events; this
runs the size issue 25 names (about 1.5 GB of JSON, several minutes). Each size runs in its own
process, writing nowhere (the files are counted, not kept), and reports its peak RSS.

    python benchmarks/trailgen_memory.py [--events 100000 1000000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import resource, sys, tempfile
from pathlib import Path
import trailgen
written = [0]
def count(key, data):
    written[0] += len(data)
with tempfile.TemporaryDirectory() as out:
    manifest = trailgen.generate(Path(out), trailgen.TrailOptions(events=int(sys.argv[1])), sink=count)
print(manifest["events"], written[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(events: int) -> tuple[int, int, int, float]:
    """(events written, gzip bytes, peak RSS in KiB, seconds) of one generator process."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURE, str(events)], capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(ROOT / "src")})
    count, written, peak = map(int, done.stdout.split())
    return count, written, peak, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print("| events | gzip MB written | peak RSS MiB | seconds |\n|---:|---:|---:|---:|")
    for events in args.events:
        count, written, peak, seconds = measure(events)
        print(f"| {count:,} | {written / 1e6:.1f} | {peak / 1024:.0f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
