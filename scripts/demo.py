"""The main job, locally: sample CloudTrail files into moto's S3, backfill, show what landed.

Run by `make -f Makefile.pip demo` once the services are up. Uses the shared
corpus beside the repository when present, else the repository's own samples.
"""
from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.backfill import cli  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLES = ROOT / "tests" / "events" / "transform"
BUCKET = "cloudtrail-demo"
PREFIX = "demo"
SAMPLE_FILES = 300


def sample_files() -> list[tuple[str, bytes]]:
    if (CORPUS / "AWSLogs").is_dir():
        paths = sorted((CORPUS / "AWSLogs").rglob("*.json.gz"))[:SAMPLE_FILES]
        return [(str(p.relative_to(CORPUS)), p.read_bytes()) for p in paths]
    events = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.input.json"))]
    key = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
           "111122223333_CloudTrail_eu-west-1_20240115T0910Z_DemoSample000001.json.gz")
    return [(key, gzip.compress(json.dumps({"Records": events}).encode()))]


def main() -> int:
    opensearch = f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
    os.environ.update({
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}",
        "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
        "ES_HOSTNAME": opensearch, "ES_AUTH": "none",
        "INDEX_PREFIX": PREFIX, "INDEX_REPLICAS": "0",
    })
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    files = sample_files()
    for key, data in files:
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    print(f"put {len(files)} CloudTrail files into s3://{BUCKET}/ (moto)\n"
          f"running: bulk_upload.py {BUCKET} AWSLogs/", flush=True)

    exit_code = cli.main([BUCKET, "AWSLogs/", "--log-level", "WARNING",
                          "--dead-letter-dir", str(ROOT / "build" / "dead-letter")])

    requests.post(f"{opensearch}/{PREFIX}-*/_refresh", timeout=60)
    print(f"\nindexes ({opensearch}/_cat/indices/{PREFIX}-*):")
    print(requests.get(f"{opensearch}/_cat/indices/{PREFIX}-*?v&s=index&h=index,docs.count",
                       timeout=60).text)
    query = {"size": 3, "_source": ["eventTime", "eventName", "userIdentity.arn",
                                    "responseElements_flattened.instanceId"],
             "query": {"exists": {"field": "responseElements_flattened.instanceId"}},
             "sort": [{"eventTime": "desc"}]}
    hits = requests.post(f"{opensearch}/{PREFIX}-*/_search", json=query, timeout=60).json()
    print("example search: events that returned an instanceId (any nesting), newest first")
    print(f"  POST {PREFIX}-*/_search {json.dumps(query['query'])}")
    print(f"  {hits['hits']['total']['value']} hits; first {len(hits['hits']['hits'])}:")
    for hit in hits["hits"]["hits"]:
        print("  " + json.dumps(hit["_source"]))
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
