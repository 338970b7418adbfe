"""Scale out the Lambda path on this machine: N handler processes draining one SQS queue.

Not a test: it prints (and writes to build/bench_scale.md) what N concurrent Lambda
execution environments, N = 1, 2, 4, 8, achieve against one cluster, and where their time
goes, so that SqsMaximumConcurrency can be sized from a cluster's measured capacity. Needs
the services (`make services`: OpenSearch on OPENSEARCH_PORT, moto on MOTO_PORT) and the
shared corpus at ../shared/corpus/AWSLogs.

Once: the corpus replicated with fresh eventIDs and file names (benchmarks/bench.py's data set)
to at least --events events, uploaded to moto's S3. Then for each N:

1. a fresh SQS queue in moto, filled by the backfill's ``--via-queue`` (one S3-notification
   message per file, as S3 would send), and fresh indexes: ``index_body(1, 0)``'s settings
   with the mapping the data set grows to (copied from indexes warmed once with it), so that
   no round waits on dynamic mapping updates: the steady state of a deployed Lambda, whose
   month's index exists and maps CloudTrail's fields;
2. N worker processes, each one Lambda execution environment: it imports the handler and
   builds its processor (the cold start, before the clock starts), then loops: receive up
   to 10 messages (long poll of 1 s), build the SQS event Lambda would, call
   ``lambda_function.lambda_handler(event, context)``, delete the messages not named in
   ``batchItemFailures``; it stops after two empty polls;
3. events/s = events / (the last delete - the start signal); every event must be in the
   indexes and the queue empty, else the round is marked FAILED.

Where the time goes is measured inside each worker by wrapping the package's collaborators
(no change to src/): S3 GET (``S3Source.read``), decode (the ``iter_events`` generator),
transform (``Processor._item``: document_for + bulk_item), gzip of the bulk body, the _bulk
POST until its answer (``Cluster.request`` on /_bulk), other cluster calls (index creation,
the write gate), the rest of the handler, and the SQS calls. CPU seconds of the workers,
OpenSearch (its _nodes/stats) and moto (/proc, when services.sh started it) say which one
saturates the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import bench  # noqa: E402  (benchmarks/bench.py: the data set, the cluster calls, the config)
from cloudtrail_es.write.indexes import index_body  # noqa: E402

REPORT = ROOT / "build" / "bench_scale.md"
CONCURRENCY = (1, 2, 4, 8)
#: A worker stops after this many empty long polls in a row.
EMPTY_POLLS = 2
POLL_SECONDS = 1
#: What each worker's time is split into (seconds, summed over the worker's active span).
PARTS = ("sqs_receive", "s3_get", "decode", "transform", "gzip", "bulk_post_wait",
         "cluster_other", "handler_other", "sqs_delete", "idle_polls", "loop_other")
PART_NAMES = {
    "sqs_receive": "SQS receive", "s3_get": "S3 GET", "decode": "decode (JSON)",
    "transform": "transform", "gzip": "gzip body", "bulk_post_wait": "_bulk POST wait",
    "cluster_other": "other cluster calls", "handler_other": "rest of handler",
    "sqs_delete": "SQS delete", "idle_polls": "empty polls", "loop_other": "rest of loop",
}


# --------------------------------------------------------------------------- worker


class Timers(dict[str, float]):
    """Seconds per part (0 for a part never timed); ``wrap`` times a method of a class."""

    def __missing__(self, part: str) -> float:
        return 0.0

    def wrap(self, owner: Any, name: str, part: str | Callable[..., str]) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = part(*args, **kwargs) if callable(part) else part
                timers[label] += time.perf_counter() - started

        setattr(owner, name, timed)

    def timed_iterator(self, iterator: Iterator[Any], part: str) -> Iterator[Any]:
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self[part] += time.perf_counter() - started
                return
            self[part] += time.perf_counter() - started
            self["events"] += 1
            yield item


class FakeContext:
    """What the handler reads of Lambda's context: the time left (here: a 15-minute Lambda)."""

    function_name = "CloudTrail_to_Elasticsearch"
    aws_request_id = "bench"

    def __init__(self, timeout_ms: int = 900_000) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages."""
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {},
        "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn, "awsRegion": os.environ.get("AWS_REGION", "us-east-1"),
    } for m in messages]}


def instrument(timers: Timers) -> None:
    """Time the collaborators the handler calls; the code under test is not changed."""
    from cloudtrail_es.write import processor
    from cloudtrail_es.write.bulk import BulkWriter
    from cloudtrail_es.write.cluster import Cluster
    from cloudtrail_es.read.sources import S3Source

    timers.wrap(S3Source, "read", "s3_get")
    timers.wrap(BulkWriter, "_post", "bulk_total")
    timers.wrap(Cluster, "request",
                lambda self, method, path, *a, **k: "bulk_post_wait" if path.startswith("/_bulk")
                else "cluster_other")
    timers.wrap(processor.Processor, "_item", "transform")
    iter_events = processor.iter_events
    processor.iter_events = lambda data: timers.timed_iterator(iter_events(data), "decode")


def worker(queue_url: str) -> int:
    """One Lambda execution environment: cold start, then receive / handle / delete."""
    import boto3

    started = time.perf_counter()
    timers = Timers()
    import lambda_function
    from cloudtrail_es.aws import handler as routes

    instrument(timers)
    routes.processor()   # the cold start: settings, session, engine detection
    cold_s = time.perf_counter() - started
    sqs = boto3.client("sqs")
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()   # the start signal
    go = time.monotonic()
    cpu_go = time.process_time()
    messages = failed = empty = failed_deletes = 0
    last_done = go
    while empty < EMPTY_POLLS:
        started = time.perf_counter()
        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=POLL_SECONDS,
                                       AttributeNames=["All"]).get("Messages", [])
        if not received:
            empty += 1
            timers["idle_polls"] += time.perf_counter() - started
            continue
        empty = 0
        timers["sqs_receive"] += time.perf_counter() - started
        started = time.perf_counter()
        answer = lambda_function.lambda_handler(sqs_event(received, queue_arn), FakeContext())
        timers["handler"] += time.perf_counter() - started
        not_done = {item["itemIdentifier"] for item in answer["batchItemFailures"]}
        started = time.perf_counter()
        done = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                for n, m in enumerate(received) if m["MessageId"] not in not_done]
        if done:   # a stale receipt handle (the message was delivered again) fails its delete
            failed_deletes += len(sqs.delete_message_batch(
                QueueUrl=queue_url, Entries=done).get("Failed", []))
        timers["sqs_delete"] += time.perf_counter() - started
        messages += len(received)
        failed += len(not_done)
        last_done = time.monotonic()
    timers["span"] = last_done - go
    print(json.dumps({"go": go, "last_done": last_done, "cold_s": cold_s, "messages": messages,
                      "failed_messages": failed, "failed_deletes": failed_deletes,
                      "cpu_s": time.process_time() - cpu_go,
                      "timers": dict(timers)}), flush=True)
    return 0


# --------------------------------------------------------------------------- one round


@dataclass
class Round:
    workers: int
    events: int
    seconds: float = 0.0
    enqueue_s: float = 0.0
    reports: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    problem: str = ""
    #: Events read twice (a message delivered twice: SQS is at-least-once; ids make it harmless).
    redelivered: int = 0
    #: Deletes refused for a stale receipt handle (such a message comes back, to be skipped).
    failed_deletes: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def parts(self) -> dict[str, float]:
        """Seconds per part, summed over the workers, each worker's parts adding to its span."""
        total = Timers()
        for report in self.reports:
            timers = Timers(report["timers"])
            part = {name: timers[name] for name in
                    ("sqs_receive", "s3_get", "decode", "transform", "bulk_post_wait",
                     "cluster_other", "sqs_delete", "idle_polls")}
            part["gzip"] = timers["bulk_total"] - timers["bulk_post_wait"]
            part["handler_other"] = timers["handler"] - sum(
                part[name] for name in ("s3_get", "decode", "transform", "gzip",
                                        "bulk_post_wait", "cluster_other"))
            # the empty polls after the last delete are outside the span
            inside = timers["span"] - (timers["sqs_receive"] + timers["handler"]
                                       + timers["sqs_delete"])
            part["idle_polls"] = min(part["idle_polls"], max(inside, 0.0))
            part["loop_other"] = max(inside - part["idle_polls"], 0.0)
            for name, seconds in part.items():
                total[name] += seconds
        return {name: total[name] for name in PARTS}


class CpuMeter:
    """CPU seconds used by OpenSearch (its own stats) and moto (/proc, if services.sh ran it)."""

    def __init__(self, admin: bench.Admin, moto_port: str) -> None:
        self.admin = admin
        pid_file = Path(os.environ.get("RUN_DIR", ROOT / ".services")) / f"moto-{moto_port}.pid"
        self.moto_pid = pid_file.read_text().strip() if pid_file.exists() else None

    def read(self) -> dict[str, float]:
        found = {}
        stats = self.admin.http.get(f"{self.admin.url}/_nodes/stats/process", timeout=30).json()
        found["opensearch"] = sum(node["process"]["cpu"]["total_in_millis"]
                                  for node in stats["nodes"].values()) / 1000
        if self.moto_pid:
            try:
                fields = Path(f"/proc/{self.moto_pid}/stat").read_text().rsplit(")", 1)[1].split()
                found["moto"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return found


def enqueue(dataset: bench.Dataset, queue_url: str, config: bench.Config) -> float:
    """``python -m cloudtrail_es BUCKET AWSLogs/ --via-queue URL``; its seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cloudtrail_es", dataset.bucket, "AWSLogs/",
                           "--via-queue", queue_url, "--json", "--quiet"], cwd=ROOT,
                          env=config.child_env("bench-enqueue"), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = bench.last_json_line(done.stdout) or {}
    if done.returncode or summary.get("files_enqueued") != len(dataset.files):
        raise RuntimeError(f"--via-queue: exit {done.returncode}, {summary}, {done.stderr[-500:]}")
    return seconds


def warmed_mappings(dataset: bench.Dataset, config: bench.Config,
                    admin: bench.Admin) -> dict[str, Any]:
    """Month -> the mapping an index holds once the whole data set went into it."""
    prefix = f"bench-{config.run_id}-warm"
    try:
        admin.create(dataset.index_names(prefix))
        bench.post_bodies(bench.bulk_bodies(bench.dataset_events(dataset, prefix), config), config)
        answer = admin.http.get(f"{admin.url}/{prefix}-*/_mapping", timeout=120).json()
    finally:
        admin.delete(prefix)
    return {name[len(prefix) + 1:]: body["mappings"] for name, body in answer.items()}


def create_warm(prefix: str, mappings: dict[str, Any], admin: bench.Admin) -> None:
    settings = index_body(1, 0)["settings"]
    for month, mapping in mappings.items():
        response = admin.http.put(f"{admin.url}/{prefix}-{month}", timeout=120,
                                  json={"settings": settings, "mappings": mapping})
        if response.status_code != 200:
            raise RuntimeError(f"cannot create {prefix}-{month}: {response.text[:300]}")
    admin.http.get(f"{admin.url}/_cluster/health/{prefix}-*",
                   params={"wait_for_status": "green", "timeout": "120s"}, timeout=130)


def run_round(n: int, dataset: bench.Dataset, config: bench.Config, admin: bench.Admin,  # noqa: C901 - one round, step by step
              cpu: CpuMeter, mappings: dict[str, Any]) -> Round:
    import boto3

    sqs = boto3.client("sqs")
    prefix = f"bench-{config.run_id}-scale{n}"
    queue_url = sqs.create_queue(QueueName=f"bench-{config.run_id}-scale{n}",
                                 Attributes={"VisibilityTimeout": "900"})["QueueUrl"]
    result = Round(n, dataset.events)
    workers: list[subprocess.Popen] = []
    try:
        create_warm(prefix, mappings, admin)
        result.enqueue_s = enqueue(dataset, queue_url, config)
        bench.progress(f"{n} worker(s): queue filled with {len(dataset.files):,} messages in "
                       f"{result.enqueue_s:.1f} s; starting the workers ...")
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", queue_url], cwd=ROOT,
                                    env=config.child_env(prefix), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True) for _ in range(n)]
        for process in workers:   # every cold start done before the clock starts
            line = process.stdout.readline() if process.stdout else ""
            if not line.startswith('{"ready"'):
                raise RuntimeError(f"a worker did not start: {line!r}")
        before = cpu.read()
        go = time.monotonic()
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in workers:
            out, _ = process.communicate(timeout=1800)
            report = bench.last_json_line(out)
            if process.returncode or report is None:
                raise RuntimeError(f"a worker failed: exit {process.returncode}")
            result.reports.append(report)
        after = cpu.read()
        result.seconds = max(r["last_done"] for r in result.reports) - go
        result.cpu = {name: after[name] - before[name] for name in after if name in before}
        result.cpu["workers"] = sum(r["cpu_s"] for r in result.reports)
        counted = admin.count(prefix)
        left = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        events_read = sum(Timers(r["timers"])["events"] for r in result.reports)
        problems = []
        if counted != dataset.events:
            problems.append(f"{counted:,} documents indexed of {dataset.events:,}")
        if events_read < dataset.events:   # more is SQS's at-least-once delivery: harmless
            problems.append(f"{events_read:,.0f} events read")
        result.redelivered = int(events_read - dataset.events)
        result.failed_deletes = sum(r["failed_deletes"] for r in result.reports)
        if int(left["ApproximateNumberOfMessages"]) or int(
                left["ApproximateNumberOfMessagesNotVisible"]) > result.failed_deletes:
            problems.append(f"messages left in the queue: {left}")
        if sum(r["failed_messages"] for r in result.reports):
            problems.append("some messages failed")
        result.problem = "; ".join(problems)
        bench.progress(f"  {result.rate:,.0f} events/s ({result.seconds:.1f} s)"
                       + (f"; PROBLEM: {result.problem}" if result.problem else ""))
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
        sqs.delete_queue(QueueUrl=queue_url)
        admin.delete(prefix)
    return result


# --------------------------------------------------------------------------- report


def report(rounds: list[Round], dataset: bench.Dataset, version: str, load: float) -> str:
    base = rounds[0].rate if rounds and not rounds[0].problem else None
    lines = [
        "## Scale-out: N Lambda execution environments draining one SQS queue",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}; load average {load:.2f} at the start",
        f"- cluster: {version}, one node, on the same machine (so are moto and the workers)",
        f"- data: {dataset.events:,} events in {len(dataset.files):,} files (the shared corpus "
        f"replicated with fresh eventIDs; {dataset.events / len(dataset.files):.1f} events a "
        f"file), one SQS message per file, filled by `--via-queue`",
        "- fresh indexes each round (1 shard, 0 replicas), mapped as the data set maps them "
        "(no dynamic mapping update during the timed region)",
        "- each worker process is one execution environment: receive 10, `lambda_handler`, "
        "delete; cold start before the clock; events/s = events / (last delete - start)",
        "",
        "| processes | seconds | events/s | × 1 process | events/s per process | "
        "files/s | CPU s: workers / OpenSearch / moto | their share of the cores |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    cores = os.cpu_count() or 1
    for r in rounds:
        if r.problem:
            lines.append(f"| {r.workers} | FAILED: {r.problem} | | | | | | |")
            continue
        per_process = [Timers(w["timers"])["events"] / w["timers"]["span"]
                       for w in r.reports if w["timers"].get("span")]
        busy = sum(r.cpu.values()) / (cores * r.seconds)
        lines.append(
            f"| {r.workers} | {r.seconds:.1f} | {r.rate:,.0f} | "
            f"{bench.fmt_ratio(bench.ratio(r.rate, base))} | "
            f"{sum(per_process) / len(per_process):,.0f} | {len(dataset.files) / r.seconds:,.1f} | "
            f"{r.cpu.get('workers', 0):.1f} / {r.cpu.get('opensearch', 0):.1f} / "
            f"{r.cpu.get('moto', float('nan')):.1f} | {busy:.0%} |"
            + (f" ({r.redelivered} events read twice: a message delivered twice)"
               if r.redelivered else "")
            + (f" ({r.failed_deletes} deletes refused: stale receipt handle)"
               if r.failed_deletes else ""))
    lines += ["", "Where each process's time goes (share of the workers' summed active time):", "",
              "| processes | " + " | ".join(PART_NAMES[p] for p in PARTS) + " |",
              "|---:|" + "---:|" * len(PARTS)]
    for r in rounds:
        if r.problem:
            continue
        parts = r.parts()
        span = sum(parts.values()) or 1.0
        lines.append(f"| {r.workers} | " + " | ".join(f"{parts[p] / span:.0%}" for p in PARTS)
                     + " |")
    cold = [w["cold_s"] for r in rounds for w in r.reports]
    if cold:
        lines += ["", f"Cold start (import + processor, before the clock): median "
                      f"{sorted(cold)[len(cold) // 2] * 1000:.0f} ms over {len(cold)} processes. "
                      f"Filling the queue with `--via-queue`: {len(dataset.files):,} messages in "
                      f"{rounds[0].enqueue_s:.1f} s."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6_000,
                        help="events in the data set (default: %(default)s)")
    parser.add_argument("--processes", type=int, nargs="+", default=list(CONCURRENCY),
                        help="the numbers of concurrent handler processes (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=bench.DEFAULT_CORPUS,
                        help="the AWSLogs directory to replicate (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPORT,
                        help="also write the tables here (default: %(default)s)")
    parser.add_argument("--worker", metavar="QUEUE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or min(args.processes) < 1:
        parser.error("--events and --processes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if not args.corpus.is_dir():
        print(f"bench_scale: the corpus is not at {args.corpus}; give --corpus DIR", file=sys.stderr)
        return 2
    config = bench.configure()
    admin = bench.Admin(config.es_url)
    try:
        version = admin.version()
    except Exception as exc:  # requests' errors: no cluster there
        print(f"bench_scale: no cluster at {config.es_url} ({exc}); run `make services`",
              file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    bench.progress(f"{version} at {config.es_url}; moto at {config.moto_url}; reading the corpus")
    workdir = Path(tempfile.mkdtemp(prefix="ctes-bench-scale-"))
    bucket = f"bench-{config.run_id}-scale"
    cpu = CpuMeter(admin, config.moto_url.rsplit(":", 1)[1])
    rounds = []
    try:
        dataset = bench.build_dataset(bench.load_corpus(args.corpus), args.events, workdir / "logs")
        bench.progress(f"{dataset.events:,} events in {len(dataset.files):,} files; uploading "
                       f"to s3://{bucket} (moto) ...")
        bench.upload(dataset, bucket)
        bench.progress("warming the indexes' mapping with the data set ...")
        mappings = warmed_mappings(dataset, config, admin)
        for n in args.processes:
            rounds.append(run_round(n, dataset, config, admin, cpu, mappings))
            time.sleep(2)   # let the cluster settle (deletes, merges) before the next round
        table = report(rounds, dataset, version, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        bench.empty_bucket(bucket)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    bench.progress(f"tables written to {args.output}")
    return 1 if any(r.problem for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
