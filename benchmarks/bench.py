"""Benchmark the loader against the cluster's own limit, on this machine: `make bench`.

Not a test: it prints (and writes to build/bench.md) a markdown table of throughput,
memory and import time, with the targets beside the numbers. Needs the services
(`make services`: OpenSearch on OPENSEARCH_PORT, moto on MOTO_PORT) and the shared
corpus at ../shared/corpus/AWSLogs.

What it does, once per bench run:

1. Data: the corpus replicated, each copy with fresh eventIDs and new file-name
   suffixes, to at least --events events, in CloudTrail's layout, written to a temp
   dir on local disk and uploaded to moto's S3.
2. Side by side, contenders alternated (the order rotates each round), median of
   --runs rounds, each contender into fresh indexes (its own INDEX_PREFIX, deleted
   after) pre-created from ``indexes.index_body(1, 0)`` with ``refresh_interval``
   left at the cluster default (1 s) for all:
     floor          NDJSON bodies built (document_for + bulk_item) and gzipped before
                    timing, chunked as ours chunks, posted by N threads with requests;
     ours (S3)      ``python -m cloudtrail_es BUCKET AWSLogs/`` from moto, end to end;
     ours (dir)     ``python -m cloudtrail_es --dir TEMPDIR``, end to end;
     parallel_bulk  opensearch-py's helpers.parallel_bulk; read, gunzip, parse and
                    transform happen inside the timed region (ours does them too).
   Once, for context: moto's own ceiling (GET every object with the same N threads).
3. Transform only, one thread, no network: json.loads + document_for + bulk_item.
4. The Lambda path: one file of 1,000 / 10,000 / 100,000 events in moto's S3, handled
   by ``lambda_function.lambda_handler`` in a fresh interpreter; duration and peak RSS.
5. The handler's cold import time (median of 5 fresh interpreters).
6. The corpus as it is (no replication), end to end into indexes nobody made beforehand,
   alternated rounds: ours (``--dir``) against the seed project's path re-implemented
   (``seed_corpus``: its documented flatten, ``json.dumps``, one ``_bulk`` a file, its index
   template put before timing, dynamic mapping for the rest), with the mapping updates each
   run made the cluster apply, counted in the node's log (``--node-log``).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import requests

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from cloudtrail_es.core import gzipped  # noqa: E402
from cloudtrail_es.read import keys  # noqa: E402
from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import bulk_item, chunks  # noqa: E402
from cloudtrail_es.core.config import Settings  # noqa: E402
from cloudtrail_es.write.indexes import index_body  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from storage import seed_document, seed_dumps, seed_index_body  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "AWSLogs"
REPORT = ROOT / "build" / "bench.md"
LAMBDA_SIZES = (1_000, 10_000, 100_000)
IMPORT_SAMPLES = 5
QUICK_EVENTS = 20_000

# The targets the table is judged against.
TARGET_VS_FLOOR = 0.8  # the loader within 0.8x of ready-made bodies
TARGET_VS_PARALLEL_BULK = 1.5
TARGET_TRANSFORM_EPS = 40_000
TARGET_LAMBDA_RSS_MB = 200
TARGET_IMPORT_MS = 300
TARGET_CORPUS_VS_SEED = 3.0

#: Settings that would make ours chunk or compress differently from the other contenders.
UNFAIR_ENV = ("BULK_MAX_DOCS", "BULK_MAX_BYTES", "ES_COMPRESS_REQUESTS", "INDEX_SHARDS")

_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup


@dataclass
class Config:
    """What every contender shares: the cluster, the chunking, the concurrency."""

    es_url: str
    moto_url: str
    workers: int
    max_docs: int
    max_bytes: int
    compress: bool
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def child_env(self, index_prefix: str) -> dict[str, str]:
        """The environment of ours as a subprocess: the CLI's and the handler's defaults."""
        env = {k: v for k, v in os.environ.items() if k not in UNFAIR_ENV}
        env.update({
            "ES_HOSTNAME": self.es_url, "ES_AUTH": "none", "INDEX_PREFIX": index_prefix,
            "INDEX_REPLICAS": "0", "PYTHONPATH": str(SRC), "LOG_LEVEL": "WARNING",
        })
        return env


def configure() -> Config:
    """Point boto3 at moto (as scripts/demo.py does) and read ours' defaults."""
    es_url = f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
    moto_url = f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}"
    os.environ.update({
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    })
    defaults = Settings(es_url=es_url)
    try:
        from cloudtrail_es.backfill.cli import DEFAULT_WORKERS as workers
    except ImportError:  # the CLI moved it; its --workers default is what counts
        workers = 4
    return Config(es_url, moto_url, workers, defaults.bulk_max_docs, defaults.bulk_max_bytes,
                  defaults.compress_requests)


class Admin:
    """The few cluster calls the bench makes around the timed regions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def version(self) -> str:
        answer = self.http.get(self.url, timeout=10).json()
        version = answer.get("version", {})
        return f"{version.get('distribution', 'elasticsearch')} {version.get('number', '?')}"

    def create(self, names: list[str]) -> None:
        body = index_body(1, 0)

        def put(name: str) -> None:
            response = self.http.put(f"{self.url}/{name}", json=body, timeout=120)
            if response.status_code != 200:
                raise RuntimeError(f"cannot create {name}: {response.text[:300]}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, names))
        self.http.get(f"{self.url}/_cluster/health/{','.join(names)}",
                      params={"wait_for_status": "green", "timeout": "120s"}, timeout=130)

    def count(self, prefix: str) -> int:
        self.http.post(f"{self.url}/{prefix}-*/_refresh", timeout=300)
        answer = self.http.get(f"{self.url}/{prefix}-*/_count", timeout=120).json()
        return int(answer.get("count", -1))

    def delete(self, prefix: str) -> None:
        names = self.http.get(f"{self.url}/_cat/indices/{prefix}-*", params={"h": "index"},
                              timeout=60).text.split()
        for start in range(0, len(names), 50):
            self.http.delete(f"{self.url}/{','.join(names[start:start + 50])}", timeout=120)


# --------------------------------------------------------------------------- data

#: (key, records) of each corpus file.
CorpusFiles = list[tuple[str, list[dict[str, Any]]]]


@dataclass
class Dataset:
    root: Path            # local copy, CloudTrail layout below AWSLogs/
    files: list[str]      # keys relative to root, each starting with AWSLogs/
    events: int
    bucket: str = ""

    def months(self) -> list[str]:
        return sorted({keys.index_name_for(key, "")[1:] for key in self.files})

    def index_names(self, prefix: str) -> list[str]:
        return [f"{prefix}-{month}" for month in self.months()]

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


def load_corpus(corpus: Path) -> CorpusFiles:
    """(key relative to the corpus' parent, records) for every CloudTrail log file."""
    files = []
    for path in sorted(corpus.rglob("*.json*")):
        key = str(path.relative_to(corpus.parent)).replace(os.sep, "/")
        if not keys.is_log_file_key(key):
            continue
        data = path.read_bytes()
        content = json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        files.append((key, content["Records"]))
    return files


def fresh_suffix(rng: random.Random, copy: int) -> str:
    return f"B{copy:03d}" + "".join(rng.choices(string.ascii_letters + string.digits, k=12))


def renamed(key: str, suffix: str) -> str:
    """The same key with another unique part: ..._20231105T0425Z_<suffix>.json.gz"""
    directory, _, name = key.rpartition("/")
    stem = name.split(".", 1)[0]
    return f"{directory}/{stem.rsplit('_', 1)[0]}_{suffix}.json.gz"


def with_fresh_ids(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**record, "eventID": str(uuid.uuid4())} for record in records]


def build_dataset(corpus_files: CorpusFiles, target: int,
                  root: Path) -> Dataset:
    """Copies of the corpus, fresh eventIDs and names, until at least ``target`` events."""
    rng = random.Random()
    dataset = Dataset(root, [], 0)
    copy = 0
    while dataset.events < target:
        for key, records in corpus_files:
            if dataset.events >= target:
                break
            new_key = renamed(key, fresh_suffix(rng, copy))
            path = root / new_key
            path.parent.mkdir(parents=True, exist_ok=True)
            body = json.dumps({"Records": with_fresh_ids(records)}).encode()
            path.write_bytes(gzip.compress(body, 6))
            dataset.files.append(new_key)
            dataset.events += len(records)
        copy += 1
    dataset.files.sort()
    return dataset


def s3_client() -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", config=BotoConfig(max_pool_connections=16))


def upload(dataset: Dataset, bucket: str) -> None:
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=dataset.read(key)),
                      dataset.files))
    dataset.bucket = bucket


def empty_bucket(bucket: str) -> None:
    client = s3_client()
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            entries = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
            if entries:
                client.delete_objects(Bucket=bucket, Delete={"Objects": entries, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except Exception as exc:  # cleanup only; say so and go on
        progress(f"could not remove s3://{bucket}: {exc}")


# --------------------------------------------------------------------------- contenders


@dataclass
class Timing:
    seconds: float
    indexed: int          # what the contender says it wrote
    problem: str = ""     # empty when every event was indexed


def dataset_events(dataset: Dataset, prefix: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(index, position in its file, event) for every event of the data set, in file order."""
    for key in dataset.files:
        index = keys.index_name_for(key, prefix)
        records = json.loads(gzip.decompress(dataset.read(key)))["Records"]
        for position, event in enumerate(records):
            yield index, position, event


def bulk_bodies(events: Iterable[tuple[str, int, dict[str, Any]]],
                config: Config) -> list[tuple[int, bytes]]:
    """(documents, body) for every _bulk request: transformed, chunked as ours, gzipped as ours."""
    items = (bulk_item(index, transform.document_id(event), transform.document_for(event), position)
             for index, position, event in events)
    bodies = []
    for chunk in chunks(items, config.max_docs, config.max_bytes):
        body = b"".join(item.lines for item in chunk)
        if config.compress:
            body = gzipped.compress(body)
        bodies.append((len(chunk), body))
    return bodies


def post_bodies(bodies: list[tuple[int, bytes]], config: Config) -> int:
    """POST ready bodies with ``workers`` threads; the number of documents not indexed."""
    headers = {"Content-Type": "application/x-ndjson"}
    if config.compress:
        headers["Content-Encoding"] = "gzip"
    local = threading.local()
    url = f"{config.es_url}/_bulk?filter_path=errors,items.*.error"

    def post(job: tuple[int, bytes]) -> int:
        documents, body = job
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(url, data=body, headers=headers, timeout=300)
        if response.status_code != 200:
            return documents
        answer = response.json()
        return len(answer.get("items", [])) if answer.get("errors") else 0

    with ThreadPoolExecutor(config.workers) as pool:
        return sum(pool.map(post, bodies))


def run_floor(dataset: Dataset, config: Config, prefix: str) -> Timing:
    """The cluster's limit: bodies built before timing, then only the POSTs are timed."""
    bodies = bulk_bodies(dataset_events(dataset, prefix), config)
    started = time.perf_counter()
    failed = post_bodies(bodies, config)
    seconds = time.perf_counter() - started
    return Timing(seconds, dataset.events - failed,
                  f"{failed} documents not indexed" if failed else "")


def run_ours(dataset: Dataset, config: Config, prefix: str, from_s3: bool) -> Timing:
    """``python -m cloudtrail_es`` as a user runs it, from moto's S3 or from the local dir."""
    where = [dataset.bucket, "AWSLogs/"] if from_s3 else ["--dir", str(dataset.root)]
    dead_letters = dataset.root.parent / f"dead-letter-{prefix}"
    command = [sys.executable, "-m", "cloudtrail_es", *where, "--quiet", "--json",
               "--workers", str(config.workers), "--dead-letter-dir", str(dead_letters)]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=config.child_env(prefix),
                              capture_output=True, text=True)
    seconds = time.perf_counter() - started
    summary = last_json_line(finished.stdout)
    if summary is None:
        tail = (finished.stderr or finished.stdout)[-500:]
        return Timing(seconds, 0, f"exit {finished.returncode}, no summary: {tail}")
    indexed = summary.get("indexed", 0) + summary.get("degraded", 0)
    problems = []
    if finished.returncode != 0:
        problems.append(f"exit {finished.returncode}")
    if summary.get("events_read") != dataset.events:
        problems.append(f"read {summary.get('events_read')} of {dataset.events} events")
    for name in ("dead_lettered", "files_failed"):
        if summary.get(name):
            problems.append(f"{name} {summary[name]}")
    if indexed != dataset.events:
        problems.append(f"indexed {indexed} of {dataset.events}")
    return Timing(seconds, indexed, "; ".join(problems))


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_parallel_bulk(dataset: Dataset, config: Config, prefix: str) -> Timing:
    """opensearch-py's helpers.parallel_bulk, same chunks and threads, gzip as ours."""
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[config.es_url], http_compress=config.compress, timeout=300,
                        pool_maxsize=2 * config.workers)

    def actions() -> Iterator[dict[str, Any]]:
        for index, _, event in dataset_events(dataset, prefix):
            yield {"_index": index, "_id": transform.document_id(event),
                   "_source": transform.document_for(event)}

    indexed = failed = 0
    started = time.perf_counter()
    for ok, _ in helpers.parallel_bulk(client, actions(), thread_count=config.workers,
                                       chunk_size=config.max_docs,
                                       max_chunk_bytes=config.max_bytes,
                                       raise_on_error=False, raise_on_exception=False):
        indexed += ok
        failed += not ok
    seconds = time.perf_counter() - started
    client.close()
    return Timing(seconds, indexed, f"{failed} documents not indexed" if failed else "")


def have_opensearch_py() -> bool:
    try:
        import opensearchpy  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Contender:
    key: str              # floor, ours-s3, ours-dir, parallel_bulk
    name: str
    timed: str
    run: Callable[[Dataset, Config, str], Timing]
    events: int = 0
    timings: list[Timing] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        """events/s of the rounds in which every event was indexed."""
        return [self.events / t.seconds for t in self.timings if not t.problem]

    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def contenders(with_parallel_bulk: bool) -> list[Contender]:
    found = [
        Contender("floor", "floor (ready gzipped bodies, threads + requests)",
                  "POSTs only; bodies transformed, serialized, chunked and gzipped before timing",
                  run_floor),
        Contender("ours-s3", "ours, S3 (moto) -> OpenSearch",
                  "whole `python -m cloudtrail_es BUCKET AWSLogs/`",
                  lambda d, c, p: run_ours(d, c, p, from_s3=True)),
        Contender("ours-dir", "ours, local dir -> OpenSearch",
                  "whole `python -m cloudtrail_es --dir DIR`",
                  lambda d, c, p: run_ours(d, c, p, from_s3=False)),
    ]
    if with_parallel_bulk:
        found.append(Contender("parallel_bulk", "opensearch-py parallel_bulk",
                               "read + gunzip + parse + transform + send (in-process)",
                               run_parallel_bulk))
    return found


def race(dataset: Dataset, config: Config, admin: Admin, runs: int,
         field_: list[Contender]) -> None:
    """Every contender once a round, the order rotated each round, each into fresh indexes."""
    for contender in field_:
        contender.events = dataset.events
    for round_ in range(runs):
        order = field_[round_ % len(field_):] + field_[:round_ % len(field_)]
        for contender in order:
            prefix = f"bench-{config.run_id}-r{round_}-c{field_.index(contender)}"
            admin.create(dataset.index_names(prefix))
            try:
                progress(f"round {round_ + 1}/{runs}: {contender.name} ...")
                timing = contender.run(dataset, config, prefix)
                counted = admin.count(prefix)
                if counted != dataset.events and not timing.problem:
                    timing.problem = (f"{counted} documents in the indexes, "
                                      f"{dataset.events} expected")
                contender.timings.append(timing)
                trouble = f"; PROBLEM: {timing.problem}" if timing.problem else ""
                progress(f"  {dataset.events / timing.seconds:,.0f} events/s "
                         f"({timing.seconds:.1f} s){trouble}")
            finally:
                admin.delete(prefix)
            time.sleep(2)  # let the cluster settle (deletes, merges) before the next one


def s3_read_only(dataset: Dataset, config: Config) -> float:
    """events/s of just GETting every object from moto with ``workers`` threads (no parsing)."""
    client = s3_client()

    def get(key: str) -> int:
        return len(client.get_object(Bucket=dataset.bucket, Key=key)["Body"].read())

    started = time.perf_counter()
    with ThreadPoolExecutor(config.workers) as pool:
        sum(pool.map(get, dataset.files))
    return dataset.events / (time.perf_counter() - started)


# --------------------------------------------------------------------------- transform only


def transform_only(dataset: Dataset, runs: int) -> tuple[float, float]:
    """(events per wall second, events per CPU second) on one thread, no network."""
    raw = [(keys.index_name_for(key, "bench"), gzip.decompress(dataset.read(key)))
           for key in dataset.files]
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        for index, data in raw:
            for n, event in enumerate(json.loads(data)["Records"]):
                bulk_item(index, transform.document_id(event), transform.document_for(event), n)
        walls.append(dataset.events / (time.perf_counter() - wall))
        cpus.append(dataset.events / (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus)


# --------------------------------------------------------------------------- the corpus


def node_log(explicit: Path | None, es_url: str) -> Path | None:
    """The search engine's own log (where it records each mapping update), when readable."""
    if explicit:
        return explicit
    port = es_url.rsplit(":", 1)[-1]
    found = sorted((ROOT / ".services").glob(f"*-{port}/logs/*-{port}.log"))
    return found[0] if found else None


def mapping_updates(log: Path | None, prefix: str, since: int) -> int | None:
    """``update_mapping`` lines about the prefix's indexes written to the log after ``since``."""
    if log is None:
        return None
    with log.open("rb") as lines:
        lines.seek(since)
        return sum(1 for line in lines if b"update_mapping" in line and f"[{prefix}-".encode() in line)


def log_size(log: Path | None) -> int:
    return log.stat().st_size if log else 0


def corpus_dataset(corpus: Path) -> Dataset:
    files = sorted(str(p.relative_to(corpus.parent)).replace(os.sep, "/")
                   for p in corpus.rglob("*.json.gz"))
    files = [key for key in files if keys.is_log_file_key(key)]
    events = sum(len(json.loads(gzip.decompress((corpus.parent / key).read_bytes()))["Records"])
                 for key in files)
    return Dataset(corpus.parent, files, events)


def seed_corpus(dataset: Dataset, config: Config, prefix: str) -> Timing:
    """The seed project's path: per file, gunzip + ``json.loads`` + its flatten + ``json.dumps``,
    one uncompressed ``_bulk`` request a file (``workers`` files at once); its index template
    (``storage.seed_index_body``) put before timing; the rest of the mapping left dynamic."""
    template = {"index_patterns": [f"{prefix}-*"], "template": seed_index_body()}
    put = requests.put(f"{config.es_url}/_index_template/{prefix}", json=template, timeout=60)
    put.raise_for_status()
    local = threading.local()

    def load(key: str) -> int:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        index = keys.index_name_for(key, prefix)
        lines = []
        for event in json.loads(gzip.decompress(dataset.read(key)))["Records"]:
            lines.append(json.dumps({"index": {"_index": index, "_id": event.get("eventID")}}).encode())
            lines.append(seed_dumps(seed_document(event)))
        response = session.post(f"{config.es_url}/_bulk", data=b"\n".join(lines) + b"\n",
                                headers={"Content-Type": "application/x-ndjson"}, timeout=600)
        items = response.json().get("items", [])
        return sum(1 for item in items if next(iter(item.values()))["status"] >= 300)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(config.workers) as pool:
            rejected = sum(pool.map(load, dataset.files))
        seconds = time.perf_counter() - started
    finally:
        requests.delete(f"{config.es_url}/_index_template/{prefix}", timeout=60)
    # The seed's dynamic mapping rejects events whose fields change type: counted, not failed.
    return Timing(seconds, dataset.events - rejected)


@dataclass
class CorpusRun:
    name: str
    timings: list[Timing] = field(default_factory=list)
    updates: list[int] = field(default_factory=list)

    def median(self, events: int) -> float | None:
        rates = [events / t.seconds for t in self.timings if not t.problem]
        return statistics.median(rates) if rates else None


def corpus_race(dataset: Dataset, config: Config, admin: Admin, runs: int,
                log: Path | None) -> list[CorpusRun]:
    """Ours and the seed's path over the corpus, alternated, each into fresh indexes."""
    field_ = [(CorpusRun("ours, `python -m cloudtrail_es --dir`"),
               lambda p: run_ours(dataset, config, p, from_s3=False)),
              (CorpusRun("the seed's path, re-implemented"),
               lambda p: seed_corpus(dataset, config, p))]
    for round_ in range(runs):
        for number, (run, contender) in (list(enumerate(field_)) if round_ % 2 == 0
                                         else list(enumerate(field_))[::-1]):
            prefix = f"bench-{config.run_id}-corpus{round_}-{number}"
            since = log_size(log)
            progress(f"corpus round {round_ + 1}/{runs}: {run.name} ...")
            try:
                timing = contender(prefix)
                admin.count(prefix)
                updates = mapping_updates(log, prefix, since)
                run.timings.append(timing)
                if updates is not None:
                    run.updates.append(updates)
                progress(f"  {dataset.events / timing.seconds:,.0f} events/s "
                         f"({timing.seconds:.1f} s), {updates} mapping updates"
                         + (f"; PROBLEM: {timing.problem}" if timing.problem else "")
                         + (f"; {dataset.events - timing.indexed} rejected" if
                            timing.indexed != dataset.events else ""))
            finally:
                admin.delete(prefix)
            time.sleep(2)
    return [run for run, _ in field_]


def corpus_lines(dataset: Dataset, runs: list[CorpusRun]) -> list[str]:
    ours, seed = runs
    lines = [f"The corpus end to end ({dataset.events:,} events, {len(dataset.files):,} files, "
             f"{len(dataset.months())} monthly indexes made by the run itself):", "",
             "| contender | events/s (median) | each round | mapping updates per run (median) "
             "| events rejected |", "|---|---:|---|---:|---:|"]
    for run in runs:
        rounds = ", ".join(f"{dataset.events / t.seconds:,.0f}" for t in run.timings)
        updates = f"{statistics.median(run.updates):,.0f}" if run.updates else "n/a (no node log)"
        rejected = max((dataset.events - t.indexed for t in run.timings), default=0)
        lines.append(f"| {run.name} | {fmt_rate(run.median(dataset.events))} | {rounds} | "
                     f"{updates} | {rejected:,} |")
    value = ratio(ours.median(dataset.events), seed.median(dataset.events))
    lines.append(f"| ours / the seed's path | {fmt_ratio(value)} | target ≥ "
                 f"{TARGET_CORPUS_VS_SEED}× | "
                 f"{verdict(None if value is None else value >= TARGET_CORPUS_VS_SEED)} | |")
    return lines


# --------------------------------------------------------------------------- Lambda path

HANDLER_CHILD = r"""
import json, sys, time
started = time.perf_counter()
import lambda_function
from cloudtrail_es.aws import handler as routes
imported = time.perf_counter()
result = lambda_function.lambda_handler(json.loads(sys.argv[1]), None)
done = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"import_s": imported - started, "handler_s": done - imported,
                  "peak_kb": int(status["VmHWM"].split()[0]), "result": result}))
"""


@dataclass
class LambdaResult:
    events: int
    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    problem: str = ""


def lambda_file(corpus_files: CorpusFiles, size: int) -> tuple[str, bytes]:
    pool = [record for _, records in corpus_files for record in records]
    events = with_fresh_ids([pool[n % len(pool)] for n in range(size)])
    key = (f"AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/15/123456789012_CloudTrail_"
           f"us-east-1_20240115T0000Z_Bench{size}x{uuid.uuid4().hex[:8]}.json.gz")
    return key, gzip.compress(json.dumps({"Records": events}).encode(), 6)


def s3_notification(bucket: str, key: str, size: int) -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": key, "size": size}},
    }]}


def lambda_path(corpus_files: CorpusFiles, bucket: str,
                config: Config, admin: Admin, runs: int) -> list[LambdaResult]:
    """Each size ``runs`` times, into one index whose mapping the whole corpus warmed first.

    The steady state: the month's index exists and already maps CloudTrail's fields (in a
    fresh index the first _bulk also waits for hundreds of dynamic mapping updates).
    """
    client = s3_client()
    prefix = f"bench-{config.run_id}-lambda"
    files = {size: lambda_file(corpus_files, size) for size in LAMBDA_SIZES}
    index = keys.index_name_for(files[LAMBDA_SIZES[0]][0], prefix)
    results = []
    try:
        admin.create([index])
        progress(f"warming the mapping of {index} with the corpus ...")
        warm = ((index, n, event) for n, event in
                enumerate(with_fresh_ids([e for _, records in corpus_files for e in records])))
        post_bodies(bulk_bodies(warm, config), config)
        for size, (key, body) in files.items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
            notification = json.dumps(s3_notification(bucket, key, len(body)))
            result = LambdaResult(size)
            for round_ in range(runs):
                progress(f"Lambda handler, one file of {size:,} events, "
                         f"run {round_ + 1}/{runs} ...")
                finished = subprocess.run(
                    [sys.executable, "-c", HANDLER_CHILD, notification], cwd=ROOT,
                    env=config.child_env(prefix), capture_output=True, text=True)
                answer = last_json_line(finished.stdout)
                handled = (answer or {}).get("result", {})
                if finished.returncode or answer is None:
                    result.problem = f"exit {finished.returncode}: {finished.stderr[-400:]}"
                elif handled.get("indexed", 0) + handled.get("degraded", 0) != size:
                    result.problem = f"handler summary {handled}"
                else:
                    result.seconds.append(answer["handler_s"])
                    result.peak_mb.append(answer["peak_kb"] / 1024)
                    progress(f"  {answer['handler_s']:.2f} s, "
                             f"peak RSS {answer['peak_kb'] / 1024:.0f} MB")
            results.append(result)
    finally:
        admin.delete(prefix)
    return results


# --------------------------------------------------------------------------- import time

IMPORT_CHILD = ("import time; t = time.perf_counter(); import lambda_function; "
                "print(time.perf_counter() - t)")


def cold_import(config: Config) -> tuple[float, list[tuple[float, str]]]:
    """Median seconds of ``import lambda_function`` in fresh interpreters; the slowest modules."""
    env = config.child_env("bench-import")
    samples = []
    for _ in range(IMPORT_SAMPLES):
        out = subprocess.run([sys.executable, "-c", IMPORT_CHILD], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
        samples.append(float(out.strip().splitlines()[-1]))
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lambda_function"],
                           cwd=ROOT, env=env, capture_output=True, text=True).stderr
    packages = []  # third-party and standard-library top-level packages, cumulative
    for line in trace.splitlines():
        parts = [part.strip() for part in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit() and "." not in parts[2] \
                and parts[2] not in ("lambda_function", "cloudtrail_es"):
            packages.append((int(parts[1]) / 1e6, parts[2]))
    packages.sort(reverse=True)
    return statistics.median(samples), packages[:5]


# --------------------------------------------------------------------------- report


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def fmt_rate(rate: float | None) -> str:
    return "failed" if rate is None else f"{rate:,.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}×"


@dataclass
class Results:
    config: Config
    dataset: Dataset
    version: str
    runs: int
    load_at_start: float
    field: list[Contender]
    s3_read_eps: float = 0.0
    transform_eps: tuple[float, float] = (0.0, 0.0)   # per wall second, per CPU second
    lambdas: list[LambdaResult] = field(default_factory=list)
    import_s: float = 0.0
    heavy_imports: list[tuple[float, str]] = field(default_factory=list)
    corpus: Dataset | None = None
    corpus_runs: list[CorpusRun] = field(default_factory=list)


def report(results: Results) -> str:
    raced = any(contender.timings for contender in results.field)
    lines = header_lines(results) + [""] + (race_lines(results) + [""] if raced else []) \
        + other_lines(results)
    if results.corpus is not None and results.corpus_runs:
        lines += [""] + corpus_lines(results.corpus, results.corpus_runs)
    problems = [f"{c.name}, round {n + 1}: {t.problem}" for c in results.field
                for n, t in enumerate(c.timings) if t.problem]
    problems += [f"Lambda, {r.events:,} events: {r.problem}" for r in results.lambdas if r.problem]
    if results.heavy_imports:
        lines += ["", "Heaviest packages `import lambda_function` pulls in "
                  "(`-X importtime`, cumulative): " + ", ".join(
                      f"`{name}` {seconds * 1000:.0f} ms"
                      for seconds, name in results.heavy_imports)]
    if problems:
        lines += ["", "Problems (those rounds are left out of the medians):", ""]
        lines += [f"- {problem}" for problem in problems]
    lines += ["", f"Bench runtime {time.monotonic() - _STARTED:.0f} s; load average "
              f"{results.load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
              f"(1 min). Lambda runs: steady state (the month's index exists, its mapping "
              f"warmed by the corpus), duration = the `lambda_handler` call (boto3 client and "
              f"first-use setup included, imports not), median of {results.runs}; peak RSS = "
              f"VmHWM of the fresh interpreter (imports included), the largest of the runs.", ""]
    return "\n".join(lines)


def header_lines(results: Results) -> list[str]:
    config, dataset = results.config, results.dataset
    months = len(dataset.months())
    return [
        "# cloudtrail-to-elasticsearch benchmark",
        "",
        f"- machine: {os.cpu_count()} cores (`os.cpu_count()`), {platform.machine()}, "
        f"Python {platform.python_version()}; {results.version} at {config.es_url} "
        f"(same machine)",
        f"- data: {dataset.events:,} events in {len(dataset.files):,} files "
        f"({months} monthly indexes): the shared corpus replicated with fresh "
        f"eventIDs and file names, gzipped, on local disk and in moto S3",
        f"- every contender: fresh indexes created from `index_body(1, 0)` before timing "
        f"(1 shard, 0 replicas), `refresh_interval` left at the default (1 s), chunks of "
        f"{config.max_docs:,} docs / {config.max_bytes / 1048576:g} MiB, {config.workers} "
        f"concurrent workers (the CLI's default `--workers`), gzip request bodies "
        f"{'on' if config.compress else 'off'} (`Settings.compress_requests` default)",
        f"- median of {results.runs} rounds, contenders alternated (order rotated each round); "
        f"events/s = {dataset.events:,} events / wall seconds of the timed region; ours' "
        f"includes the interpreter's start, imports and listing",
        f"- fresh indexes mean every contender also waits for the dynamic mapping updates of "
        f"CloudTrail's fields in each of the {months} indexes: a fixed cost, cluster-side, "
        f"that weighs more the fewer `--events`",
    ]


def race_lines(results: Results) -> list[str]:
    by_key = {c.key: c for c in results.field}
    floor = by_key["floor"].median()
    pbulk = by_key["parallel_bulk"].median() if "parallel_bulk" in by_key else None
    lines = ["| contender | timed region | events/s (median) | each round | × floor | target "
             "| met |", "|---|---|---:|---|---:|---|---|"]
    for contender in results.field:
        rate = contender.median()
        rounds = ", ".join(f"{contender.events / t.seconds:,.0f}"
                           + (" (FAILED)" if t.problem else "") for t in contender.timings)
        vs_floor = ratio(rate, floor)
        target, met = "", ""
        if contender.key.startswith("ours"):
            target = f"≥ {TARGET_VS_FLOOR}× floor"
            met = verdict(None if vs_floor is None else vs_floor >= TARGET_VS_FLOOR)
        lines.append(f"| {contender.name} | {contender.timed} | {fmt_rate(rate)} | {rounds} | "
                     f"{fmt_ratio(vs_floor)} | {target} | {met} |")
    for contender in results.field:
        if contender.key.startswith("ours"):
            value = ratio(contender.median(), pbulk)
            lines.append(
                f"| {contender.name.split(' ->')[0]} / parallel_bulk | | | | "
                f"{fmt_ratio(value)} | ≥ {TARGET_VS_PARALLEL_BULK}× | "
                f"{verdict(None if value is None else value >= TARGET_VS_PARALLEL_BULK)} |")
    if "parallel_bulk" not in by_key:
        lines.append("| opensearch-py parallel_bulk | not installed (`pip install opensearch-py`) "
                     "| | | | | n/a |")
    return lines


def other_lines(results: Results) -> list[str]:
    config, dataset = results.config, results.dataset
    wall_eps, cpu_eps = results.transform_eps
    s3_files = results.s3_read_eps * len(dataset.files) / dataset.events
    lines = [
        "| measurement | value | target | met |",
        "|---|---|---|---|",
        f"| moto S3 read only: GET every object, {config.workers} threads, nothing else "
        f"(once) | {results.s3_read_eps:,.0f} events/s ({s3_files:,.0f} files/s) | "
        f"context: the S3 row's ceiling on this machine | |",
        f"| transform only, 1 thread, no network: json.loads of the decompressed files + "
        f"`document_for` + `bulk_item` | {cpu_eps:,.0f} events per CPU-second "
        f"({wall_eps:,.0f} per wall second) | ≥ {TARGET_TRANSFORM_EPS:,} events/s/core | "
        f"{verdict(cpu_eps >= TARGET_TRANSFORM_EPS)} |",
    ]
    for result in results.lambdas:
        what = f"Lambda handler, one S3 file of {result.events:,} events (fresh interpreter)"
        is_target = result.events == max(LAMBDA_SIZES)
        target = f"≤ {TARGET_LAMBDA_RSS_MB} MB" if is_target else ""
        if result.problem or not result.seconds:
            lines.append(f"| {what} | FAILED | {target} | {verdict(False) if is_target else ''} |")
            continue
        peak = max(result.peak_mb)
        seconds = statistics.median(result.seconds)
        lines.append(
            f"| {what} | {seconds:.2f} s ({result.events / seconds:,.0f} events/s), "
            f"peak RSS {peak:.0f} MB | {target} | "
            f"{verdict(peak <= TARGET_LAMBDA_RSS_MB) if is_target else ''} |")
    lines.append(
        f"| handler cold import (`import lambda_function`, median of {IMPORT_SAMPLES}) | "
        f"{results.import_s * 1000:.0f} ms | ≤ {TARGET_IMPORT_MS} ms | "
        f"{verdict(results.import_s * 1000 <= TARGET_IMPORT_MS)} |")
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000,
                        help="events in the side-by-side data set (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds; each number is a median of them (default: %(default)s)")
    parser.add_argument("--skip-lambda", action="store_true",
                        help="skip the Lambda-path measurements")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke: {QUICK_EVENTS:,} events, 1 round")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="the AWSLogs directory to replicate (default: %(default)s)")
    parser.add_argument("--skip-race", action="store_true",
                        help="skip the side-by-side race on the replicated data set")
    parser.add_argument("--skip-corpus", action="store_true",
                        help="skip the corpus end to end against the seed's path")
    parser.add_argument("--node-log", type=Path,
                        help="the engine's log, to count mapping updates (default: found under "
                             ".services for OPENSEARCH_PORT)")
    parser.add_argument("--output", type=Path, default=REPORT,
                        help="also write the table here (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.runs = QUICK_EVENTS, 1
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.corpus.is_dir():
        print(f"bench: the corpus is not at {args.corpus} (expected the shared corpus, "
              f"976 CloudTrail files; see README 'Tests'); give --corpus DIR", file=sys.stderr)
        return 2
    config = configure()
    admin = Admin(config.es_url)
    try:
        version = admin.version()
    except requests.RequestException as exc:
        print(f"bench: no cluster at {config.es_url} ({exc}); run `make services`", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    with_pbulk = have_opensearch_py()
    if not with_pbulk:
        progress("opensearch-py is not installed: `pip install opensearch-py` to compare with it")

    progress(f"{version} at {config.es_url}; moto at {config.moto_url}; "
             f"{os.cpu_count()} cores; reading the corpus {args.corpus}")
    corpus_files = load_corpus(args.corpus)
    workdir = Path(tempfile.mkdtemp(prefix="ctes-bench-"))
    bucket = f"bench-{config.run_id}"
    try:
        dataset = build_dataset(corpus_files, args.events, workdir / "logs")
        progress(f"wrote {dataset.events:,} events in {len(dataset.files):,} files to "
                 f"{dataset.root}; uploading to s3://{bucket} (moto) ...")
        upload(dataset, bucket)
        results = Results(config, dataset, version, args.runs, load, contenders(with_pbulk))
        if not args.skip_race:
            race(dataset, config, admin, args.runs, results.field)
        if not args.skip_corpus:
            results.corpus = corpus_dataset(args.corpus)
            results.corpus_runs = corpus_race(results.corpus, config, admin, args.runs,
                                              node_log(args.node_log, config.es_url))
        progress("moto S3 read only (the S3 path's ceiling here) ...")
        results.s3_read_eps = s3_read_only(dataset, config)
        progress("transform only, one thread ...")
        results.transform_eps = transform_only(dataset, args.runs)
        if not args.skip_lambda:
            results.lambdas = lambda_path(corpus_files, bucket, config, admin, args.runs)
        progress("cold import of the handler ...")
        results.import_s, results.heavy_imports = cold_import(config)
        table = report(results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        empty_bucket(bucket)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    progress(f"table written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
