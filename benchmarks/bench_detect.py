"""The detector over many matching events: peak memory and time, to show both stay bounded.

Not a test: it prints (and writes to build/bench_detect.md) what one rule matching every
event of a deployment costs the detector: the events are small CloudTrail-shaped documents
written straight into a fresh ``PREFIX-2024-05`` index (the loader's mapping, each with its
``event.ingested``), then, in a child process so that nothing of the loading counts, one
``Detector`` run records every finding (``DETECTION_MAX_FINDINGS`` set above the count) and
publishes none. The child reports its peak RSS (``ru_maxrss``), the wall time and the
findings written; the cluster must then hold exactly that many findings.

    python benchmarks/bench_detect.py --events 100000 1000000

Needs the services (``make services``: OpenSearch on OPENSEARCH_PORT).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.write import indexes  # noqa: E402

URL = os.environ.get("OPENSEARCH_URL",
                     f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}")
REPORT = ROOT / "build" / "bench_detect.md"
LOAD_BATCH = 5000
RULE = {"id": "bench-stop-logging", "title": "trail stopped", "level": "high", "tags": [],
        "query": {"term": {"eventName": {"value": "StopLogging"}}}}


def load(prefix: str, count: int) -> float:
    """``count`` matching documents, written in _bulk requests; returns the seconds taken."""
    index = f"{prefix}-2024-05"
    requests.put(f"{URL}/{index}", json={**indexes.index_body(1, 0), "settings": {
        "index": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"}}},
        timeout=120).raise_for_status()
    started = time.monotonic()
    action = json.dumps({"index": {"_index": index}})
    for first in range(0, count, LOAD_BATCH):
        lines = []
        for n in range(first, min(first + LOAD_BATCH, count)):
            millis = 1_700_000_000_000 + n
            lines.append(action)
            lines.append(json.dumps({
                "eventVersion": "1.09", "eventSource": "cloudtrail.amazonaws.com",
                "eventName": "StopLogging", "eventID": f"bench-{n}", "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T00:00:00Z", "sourceIPAddress": "203.0.113.9",
                "recipientAccountId": "111122223333",
                "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/eve"},
                "event.ingested": datetime.fromtimestamp(millis / 1000, timezone.utc)
                .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}))
        response = requests.post(f"{URL}/_bulk?filter_path=errors", timeout=300,
                                 data="\n".join(lines) + "\n",
                                 headers={"Content-Type": "application/x-ndjson"})
        response.raise_for_status()
        assert not response.json()["errors"], response.text[:500]
    requests.put(f"{URL}/{index}/_settings", json={"index": {"refresh_interval": "1s"}},
                 timeout=60).raise_for_status()
    requests.post(f"{URL}/{index}/_refresh", timeout=600).raise_for_status()
    return time.monotonic() - started


def child(prefix: str, count: int) -> None:
    """One detection run over everything; prints its figures as JSON."""
    from cloudtrail_es.core.config import DetectionSettings, Settings
    from cloudtrail_es.detections import detect
    from cloudtrail_es.write.cluster import create_cluster
    from cloudtrail_es.write.engine import detect as detect_engine

    settings = Settings.from_env({"ES_HOSTNAME": URL, "ES_AUTH": "none", "INDEX_PREFIX": prefix})
    cluster = create_cluster(settings)
    store = detect.Store(cluster, detect_engine(cluster), prefix, settings.bulk_max_docs,
                         settings.bulk_max_bytes)
    detector = detect.Detector(store, DetectionSettings(0, count + 1, 24 * 365 * 10))
    window = detect.Window(datetime(2023, 1, 1, tzinfo=timezone.utc),
                           datetime(2030, 1, 1, tzinfo=timezone.utc), detect.ARRIVAL)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    run = detector.run(detect.RuleSet(rules=[dict(RULE)]), window)
    seconds = time.monotonic() - started
    print(json.dumps({"findings": run.findings, "new": run.new, "errors": run.all_errors()[:3],
                      "seconds": round(seconds, 1),
                      "rss_before_mib": round(rss_before / 1024, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def measure(count: int) -> dict:
    prefix = f"bench-detect-{uuid.uuid4().hex[:8]}"
    try:
        load_seconds = load(prefix, count)
        output = subprocess.run([sys.executable, __file__, "--child", prefix, str(count)],
                                check=True, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        requests.post(f"{URL}/{prefix}_findings/_refresh", timeout=600)
        stored = requests.get(f"{URL}/{prefix}_findings/_count", timeout=600).json()["count"]
        return {"events": count, "load_seconds": round(load_seconds, 1), **figures,
                "stored_findings": stored, "ok": stored == count == figures["findings"]}
    finally:
        requests.delete(f"{URL}/{prefix}-*,{prefix}_*", timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    rows = []
    for count in args.events:
        row = measure(count)
        print(json.dumps(row), flush=True)
        rows.append(row)
    lines = [f"# bench_detect ({platform.node()}, {os.cpu_count()} CPUs, OpenSearch at {URL})", "",
             "| matching events | findings written | detector wall s | findings/s | peak RSS MiB "
             "| RSS before run MiB | ok |", "|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        rate = row["findings"] / row["seconds"] if row["seconds"] else 0
        lines.append(f"| {row['events']:,} | {row['stored_findings']:,} | {row['seconds']} | "
                     f"{rate:,.0f} | {row['peak_rss_mib']} | {row['rss_before_mib']} | {row['ok']} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
