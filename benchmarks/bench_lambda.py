"""The Lambda package under the real runtime loop: cold start and peak memory (`make bench`).

Not a test: it prints (and writes to build/bench_lambda.md) a markdown table. Needs the services
(`make services`: OpenSearch on OPENSEARCH_PORT, moto on MOTO_PORT) and the tools of
scripts/lambda_emulator.py (`make init`).

1. The zip, built by scripts/package.py for this machine's Python, unzipped; its size.
2. --cold times: a fresh aws-lambda-rie + awslambdaric over it, one invocation (the retention
   schedule with RETENTION_MONTHS unset, which touches nothing): the init phase as the emulator
   times it (runtime start and handler import: Lambda's "Init Duration").
3. One more fresh environment, then an SQS batch of --files messages, each one file of --events
   events in moto's S3: the first (cold) invocation, which builds the processor and meets the
   cluster, then the same batch again warm; the runtime's peak resident memory (VmHWM, what
   Lambda reports as "Max Memory Used") after each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import boto3
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
import lambda_emulator  # noqa: E402
import trails  # noqa: E402 - the tests' synthetic CloudTrail files

ROOT = Path(__file__).resolve().parents[1]


def environment(prefix: str, opensearch_url: str, moto_url: str) -> dict[str, str]:
    return {"ES_HOSTNAME": opensearch_url, "ES_AUTH": "none", "INDEX_PREFIX": prefix, "INDEX_REPLICAS": "0",
            "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


def cold_starts(task: Path, runtime: Path, env: dict[str, str], times: int, workdir: Path) -> list[float]:
    inits = []
    for number in range(times):
        with lambda_emulator.Emulator(task, "lambda_function.lambda_handler", env, runtime=runtime,
                                      log_path=workdir / f"cold-{number}.log") as function:
            answer = function.invoke(trails.scheduled("retention"))
            if answer.payload != {"deleted": []}:
                raise SystemExit(f"bench_lambda.py: unexpected answer {answer.payload!r}")
            inits += function.init_durations_ms()
    return inits


def batch_runs(task: Path, runtime: Path, env: dict[str, str], files: int, events: int,
               workdir: Path) -> list[tuple[str, float, float]]:
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"bench-lambda-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    when = trails.recently()
    bodies = {}
    for number in range(files):
        key = trails.log_key(when)
        s3.put_object(Bucket=bucket, Key=key, Body=trails.trail_file(trails.events(events, when)))
        bodies[f"m{number}"] = trails.s3_notification(bucket, key)
    rows = []
    with lambda_emulator.Emulator(task, "lambda_function.lambda_handler", env, runtime=runtime,
                                  log_path=workdir / "batch.log") as function:
        for label in ("cold", "warm"):
            answer = function.invoke(trails.sqs_batch(bodies))
            if answer.payload != {"batchItemFailures": []}:
                raise SystemExit(f"bench_lambda.py: the batch failed: {answer.payload!r}")
            rows.append((label, answer.duration_ms or 0.0, function.peak_memory_mb()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=5, help="fresh environments timed (default 5)")
    parser.add_argument("--files", type=int, default=10, help="messages (files) in the batch (default 10)")
    parser.add_argument("--events", type=int, default=2000, help="events per file (default 2000)")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "bench_lambda.md")
    args = parser.parse_args(argv)
    opensearch_url = f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
    moto_url = f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}"
    prefix = f"bench-lambda-{uuid.uuid4().hex[:8]}"
    env = environment(prefix, opensearch_url, moto_url)
    try:
        lambda_emulator.install_rie()
        with tempfile.TemporaryDirectory(prefix="bench-lambda-") as tmp:
            workdir = Path(tmp)
            artifact, task = lambda_emulator.build_package(workdir / "package")
            runtime = lambda_emulator.runtime_dir(workdir / "runtime")
            inits = cold_starts(task, runtime, env, args.cold, workdir)
            rows = batch_runs(task, runtime, env, args.files, args.events, workdir)
            size = artifact.stat().st_size
    except lambda_emulator.EmulatorError as exc:
        print(f"bench_lambda.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60)
    lines = [
        "# The Lambda package under aws-lambda-rie + awslambdaric", "",
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; zip {size / 1e6:.2f} MB; "
        f"aws-lambda-rie {lambda_emulator.RIE_VERSION}.", "",
        "| measure | value |", "|---|---|",
        f"| cold start (init phase), median of {len(inits)} | {statistics.median(inits):.0f} ms "
        f"(min {min(inits):.0f}, max {max(inits):.0f}) |",
    ]
    for label, duration, peak in rows:
        lines.append(f"| SQS batch, {args.files} files x {args.events} events, {label}: duration | "
                     f"{duration:.0f} ms |")
        lines.append(f"| peak memory (VmHWM) after the {label} batch | {peak:.0f} MB |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
