"""The whole job, locally: a generated trail into moto's S3, the backfill, then what an analyst sees.

Run by ``make -f Makefile.pip demo`` once the services are up. The trail (``python -m trailgen``)
is a month of three accounts with a planted intrusion; the detections (the starter rules in
``rules/``) find it, and three searches follow the intruder. ``--prefix``/``--bucket`` let a test
run it beside other work.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any, Sequence

import boto3
import requests
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import trailgen  # noqa: E402
from cloudtrail_es.backfill import cli  # noqa: E402
from cloudtrail_es.detections import detect  # noqa: E402

#: A month of a small organisation: ~2,300 files, quick to put into moto.
TRAIL = trailgen.TrailOptions(events=30_000, start=date(2025, 3, 3), days=31, accounts=3,
                              regions=("us-east-1", "eu-west-1"), digests=False)
UPLOADERS = 8


def say(text: str = "") -> None:
    print(text, flush=True)


def upload_trail(s3: Any, bucket: str, manifest_dir: Path) -> dict:
    """The trail made and put into S3 file by file as it is generated (a bounded queue)."""
    slots = threading.BoundedSemaphore(UPLOADERS * 4)
    done = [0]
    failures: list[str] = []

    def put(key: str, data: bytes) -> None:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:  # botocore's errors: reported below, the demo stops
            failures.append(f"{key}: {exc}")
        finally:
            done[0] += 1
            slots.release()
            if done[0] % 500 == 0:
                say(f"  {done[0]} files in s3://{bucket}/")

    with ThreadPoolExecutor(UPLOADERS) as pool:
        def submit(key: str, data: bytes) -> None:
            slots.acquire()
            pool.submit(put, key, data)
        manifest = trailgen.generate(manifest_dir, TRAIL, sink=submit)
    if failures:
        raise SystemExit(f"demo: {len(failures)} files could not be put into S3, e.g. {failures[0]}")
    return manifest


def findings(rules: Path, start: str, end: str) -> tuple[int, list[dict]]:
    """The detector's own command, its JSON lines read back."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = detect.main([str(rules), "--from", start, "--to", end, "--json"])
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def findings_table(found: list[dict]) -> None:
    say(f"  {'time':20} {'rule':38} {'who':44} {'from where':15} what")
    for f in sorted(found, key=lambda f: (f.get("eventTime", ""), f["rule_title"])):
        who = (f.get("user") or f.get("user_type") or "-").split(":", 4)[-1]
        say(f"  {f.get('eventTime', ''):20} {f['rule_title'][:38]:38} {who[:44]:44} "
            f"{f.get('sourceIPAddress', '-')[:15]:15} {f.get('eventName', '')}")


def search(url: str, pattern: str, body: dict) -> dict:
    response = requests.post(f"{url}/{pattern}/_search", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def analyst_searches(url: str, prefix: str, manifest: dict) -> None:
    pattern = f"{prefix}-*"
    key = manifest["intrusion"]["leaked_access_key"]
    query = {"term": {"userIdentity.accessKeyId": key}}
    result = search(url, pattern, {"query": query, "size": 0, "aggs": {"where": {
        "terms": {"field": "sourceIPAddress", "size": 5},
        "aggs": {"first": {"min": {"field": "eventTime"}}}}}})
    say(f"\n1. calls made with the leaked access key, by address: POST {pattern}/_search "
        f"{json.dumps(query)}, terms on sourceIPAddress")
    for where in result["aggregations"]["where"]["buckets"]:
        say(f"   {where['doc_count']:5}  {where['key']:15} first seen {where['first']['value_as_string']}")
    unusual = {"bool": {"filter": [query, {"term": {"sourceIPAddress": manifest["intrusion"]["source_ip"]}}]}}
    result = search(url, pattern, {"query": unusual, "size": 50, "sort": [{"eventTime": "asc"}],
                                   "_source": ["eventTime", "eventName", "errorCode"]})
    say("   the calls from the address never seen before:")
    for hit in result["hits"]["hits"]:
        call = hit["_source"]
        say(f"   {call['eventTime']:20} {call['eventName']:22} {call.get('errorCode', '')}")

    denied = {"terms": {"errorCode": ["AccessDenied", "Client.UnauthorizedOperation"]}}
    result = search(url, pattern, {"size": 0, "query": denied, "aggs": {
        "who": {"terms": {"field": "userIdentity.arn", "size": 5}}}})
    say(f"\n2. AccessDenied by user: {json.dumps(denied)}, terms on userIdentity.arn")
    for bucket in result["aggregations"]["who"]["buckets"]:
        say(f"   {bucket['doc_count']:5}  {bucket['key']}")

    no_mfa = {"bool": {"filter": [{"term": {"eventName": "ConsoleLogin"}},
                                  {"term": {"additionalEventData_flattened.MFAUsed": "No"}},
                                  {"terms": {"userIdentity.type": ["IAMUser", "Root"]}}]}}
    result = search(url, pattern, {"query": no_mfa, "size": 10,
                                   "_source": ["eventTime", "userIdentity.arn", "sourceIPAddress"]})
    say(f"\n3. console sign-ins without MFA: {json.dumps(no_mfa)}")
    for hit in result["hits"]["hits"]:
        source = hit["_source"]
        say(f"   {source['eventTime']:20} {source['sourceIPAddress']:15} {source['userIdentity']['arn']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="demo", help="index prefix (default %(default)s)")
    parser.add_argument("--bucket", default="cloudtrail-demo", help="S3 bucket (default %(default)s)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    opensearch = f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
    os.environ.update({
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}",
        "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "ES_HOSTNAME": opensearch, "ES_AUTH": "none",
        "INDEX_PREFIX": args.prefix, "INDEX_REPLICAS": "0",
    })
    os.environ.pop("FINDINGS_TOPIC_ARN", None)
    say(f"1/4 generating a trail and putting it into s3://{args.bucket}/ (moto at "
        f"{os.environ['AWS_ENDPOINT_URL']}): {TRAIL.events:,} events over {TRAIL.days} days, "
        f"{TRAIL.accounts} accounts, {', '.join(TRAIL.regions)}, a planted intrusion "
        "(python -m trailgen; about a minute)")
    s3 = boto3.client("s3", config=Config(max_pool_connections=UPLOADERS * 2))
    s3.create_bucket(Bucket=args.bucket)
    manifest = upload_trail(s3, args.bucket, ROOT / "build" / "demo-trail")
    say(f"  {manifest['files']:,} files of organisation {manifest['organisation']} "
        f"({', '.join(manifest['accounts'])}), {len(manifest['broken_files'])} of them broken on "
        f"purpose; the planted events are listed in build/demo-trail/{trailgen.MANIFEST_NAME}")

    say(f"\n2/4 the backfill: cloudtrail-bulk-upload {args.bucket} AWSLogs/ into {opensearch} "
        f"(index prefix {args.prefix}; broken files are reported and the run exits "
        f"{cli.EXIT_FILES_FAILED})")
    exit_code = cli.main([args.bucket, "AWSLogs/", "--log-level", "WARNING",
                          "--dead-letter-dir", str(ROOT / "build" / "dead-letter")])
    requests.post(f"{opensearch}/{args.prefix}-*/_refresh", timeout=60)
    say(f"\nindexes: GET {opensearch}/_cat/indices/{args.prefix}-*")
    say(requests.get(f"{opensearch}/_cat/indices/{args.prefix}-*?v&s=index&h=index,docs.count,store.size",
                     timeout=60).text.rstrip())

    say(f"\n3/4 detections: python -m cloudtrail_es.detections.detect rules/ --from {manifest['from']} "
        f"--to {manifest['to']}")
    code, found = findings(ROOT / "rules", manifest["from"], manifest["to"])
    findings_table(found)
    say(f"  {len(found)} findings (detect exited {code})")

    say("\n4/4 what an analyst asks next")
    analyst_searches(opensearch, args.prefix, manifest)

    say(f"\ndone in {time.monotonic() - began:.0f} s. Load your own trail into this OpenSearch "
        "(README, Load your own trail):")
    say(f"  . .venv/bin/activate; export ES_HOSTNAME={opensearch} ES_AUTH=none")
    say("  cloudtrail-bulk-upload YOUR-BUCKET AWSLogs/   # with your AWS credentials; or a local "
        "copy: cloudtrail-bulk-upload --dir ./trail-logs")
    say("Stop the services: make -f Makefile.pip services-stop")
    return exit_code if exit_code != cli.EXIT_FILES_FAILED else code


if __name__ == "__main__":
    sys.exit(main())
