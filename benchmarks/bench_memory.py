"""Peak memory of the Lambda loading one file, by the share of its events the cluster rejects.

Not a test: prints (and writes to build/bench_memory.md) the peak RSS and duration of
``lambda_function.lambda_handler`` loading one file of --events events (100,000 by default)
from moto's S3, in a fresh interpreter, for 0 %, 50 % and 100 % of them rejected by the
real OpenSearch, dead letters going to moto's S3 (``DEAD_LETTER_BUCKET``).

The rejections are the cluster's own: the month's index is made beforehand with
``eventName`` mapped as ``long``, so an event named ``RunInstances`` is refused in its full
and its degraded form alike (a mapping conflict on a core field) and is dead-lettered; an
accepted event is named ``4242`` (a number in a string, which a ``long`` takes).

    .venv/bin/python benchmarks/bench_memory.py [--events 100000] [--src DIR]

``--src`` loads another tree's ``src`` (an older commit's, exported with ``git archive``) to
compare before and after. Needs the services (``make services``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import requests

ROOT = Path(__file__).resolve().parents[1]
EVENT = json.loads((ROOT / "tests" / "events" / "transform" / "run_instances.input.json").read_text())
KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
       "111122223333_CloudTrail_eu-west-1_20240115T0910Z_MemoryBench00001.json.gz")
SHARES = (0, 50, 100)

CHILD = r"""
import json, sys, time
import lambda_function
started = time.perf_counter()
result = lambda_function.lambda_handler(json.loads(sys.argv[1]), None)
done = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"seconds": done - started, "peak_kb": int(status["VmHWM"].split()[0]),
                  "result": result}))
"""


def trail_file(events: int, rejected_percent: int) -> bytes:
    """``events`` copies of one RunInstances event, ids fresh, the first share of them refusable."""
    rejected = events * rejected_percent // 100
    records = []
    for n in range(events):
        event = json.loads(json.dumps(EVENT))
        event["eventID"] = f"membench-{n:07d}"
        event["eventName"] = "RunInstances" if n < rejected else "4242"
        records.append(event)
    return gzip.compress(json.dumps({"Records": records}).encode(), compresslevel=6)


def index_body() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from cloudtrail_es.write.indexes import index_body as ours

    body = ours(shards=1, replicas=0)
    body["mappings"]["properties"]["eventName"] = {"type": "long"}
    return body


def run_once(args: argparse.Namespace, s3: Any, bucket: str, dead_bucket: str, share: int) -> dict[str, Any]:
    prefix = f"membench-{uuid.uuid4().hex[:8]}"
    index = f"{prefix}-2024-01"
    requests.put(f"{args.es_url}/{index}", json=index_body(), timeout=60).raise_for_status()
    body = trail_file(args.events, share)
    s3.put_object(Bucket=bucket, Key=KEY, Body=body)
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": bucket}, "object": {"key": KEY}}}]}
    env = {**os.environ, "ES_HOSTNAME": args.es_url, "ES_AUTH": "none", "INDEX_PREFIX": prefix,
           "INDEX_REPLICAS": "0", "LOG_LEVEL": "WARNING", "DEAD_LETTER_BUCKET": dead_bucket,
           "DEAD_LETTER_PREFIX": f"{prefix}/", "PYTHONPATH": f"{args.src}:{ROOT / 'src'}"}
    try:
        finished = subprocess.run([sys.executable, "-c", CHILD, json.dumps(notification)],
                                  cwd=args.src, env=env, capture_output=True, text=True)
        lines = [line for line in finished.stdout.splitlines() if line.startswith('{"seconds"')]
        if finished.returncode or not lines:
            return {"share": share, "problem": f"exit {finished.returncode}: {finished.stderr[-600:]}"}
        answer = json.loads(lines[-1])
        dead = s3.list_objects_v2(Bucket=dead_bucket, Prefix=f"{prefix}/").get("KeyCount", 0)
        result = answer["result"]
        return {"share": share, "peak_mb": answer["peak_kb"] / 1024, "seconds": answer["seconds"],
                "indexed": result.get("indexed"), "dead_lettered": result.get("dead_lettered"),
                "dead_letter_files": dead, "file_mb": len(body) / 1e6}
    finally:
        requests.delete(f"{args.es_url}/{index}", timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--src", default=str(ROOT / "src"), help="the src tree to load (default: ours)")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench_memory.md"))
    args = parser.parse_args()
    args.es_url = f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}",
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    s3 = boto3.client("s3")
    bucket, dead_bucket = f"membench-{uuid.uuid4().hex[:8]}", f"membench-dead-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=dead_bucket)
    rows = []
    for share in SHARES:
        print(f"{args.events:,} events, {share} % rejected ...", file=sys.stderr, flush=True)
        row = run_once(args, s3, bucket, dead_bucket, share)
        print(f"  {row}", file=sys.stderr, flush=True)
        rows.append(row)
    lines = [f"Peak RSS of the Lambda handler, one file of {args.events:,} events ({args.src})", "",
             "| rejected | peak RSS | seconds | indexed | dead-lettered | dead-letter files |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "problem" in row:
            lines.append(f"| {row['share']} % | failed: {row['problem'][:200]!r} | | | | |")
        else:
            lines.append(f"| {row['share']} % | {row['peak_mb']:.0f} MB | {row['seconds']:.1f} | "
                         f"{row['indexed']:,} | {row['dead_lettered']:,} | {row['dead_letter_files']} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
