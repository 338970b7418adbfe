"""What telling duplicate eventIDs apart costs per event, side by side, on the shared corpus.

Not a test: prints, for the corpus events (one thread, no network), the time of
``document_for`` + ``bulk_item`` alone and with each way of remembering the ids seen in
a file: a set of ids (no duplicate detection), the pipeline's id -> ``hash(lines)``, and
id -> blake2b digest of the lines. Median of --runs rounds; ratios to the baseline.

    .venv/bin/python benchmarks/bench_duplicates.py [--runs 5]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import BulkItem, Position, bulk_item  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "AWSLogs"


def corpus_events() -> list[list[dict[str, Any]]]:
    return [json.loads(gzip.decompress(path.read_bytes()))["Records"]
            for path in sorted(CORPUS.rglob("*.json.gz"))]


def items(events: list[dict[str, Any]]) -> list[BulkItem]:
    return [bulk_item("ct-2024-01", transform.document_id(e), transform.document_for(e), Position(0, n))
            for n, e in enumerate(events)]


def baseline(item: BulkItem, seen: dict[str, Any]) -> None:
    pass


def id_set(item: BulkItem, seen: dict[str, Any]) -> None:
    seen[item.doc_id] = None


def fingerprint(item: BulkItem, seen: dict[str, Any]) -> None:
    seen.setdefault(item.doc_id, hash(item.lines))


def blake2b(item: BulkItem, seen: dict[str, Any]) -> None:
    seen.setdefault(item.doc_id, hashlib.blake2b(item.lines, digest_size=16).digest())


def timed(files: list[list[dict[str, Any]]], remember: Callable[[BulkItem, dict[str, Any]], None]) -> float:
    started = time.perf_counter()
    for events in files:
        seen: dict[str, Any] = {}
        for item in items(events):
            remember(item, seen)
    return time.perf_counter() - started


def remember_only(built: list[list[BulkItem]], remember: Callable[[BulkItem, dict[str, Any]], None]) -> float:
    started = time.perf_counter()
    for file_items in built:
        seen: dict[str, Any] = {}
        for item in file_items:
            remember(item, seen)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    files = corpus_events()
    count = sum(len(events) for events in files)
    contenders = [baseline, id_set, fingerprint, blake2b]
    times: dict[str, list[float]] = {c.__name__: [] for c in contenders}
    for run in range(args.runs):
        for contender in contenders[run % len(contenders):] + contenders[:run % len(contenders)]:
            times[contender.__name__].append(timed(files, contender))
    base = statistics.median(times["baseline"])
    print(f"{count} events, {len(files)} files, median of {args.runs} runs")
    print("| contender | us/event | ratio to baseline |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median / count * 1e6:.2f} | {median / base:.3f} |")
    built = [items(events) for events in files]
    alone: dict[str, list[float]] = {c.__name__: [] for c in contenders}
    for _ in range(args.runs):
        for contender in contenders:
            alone[contender.__name__].append(remember_only(built, contender))
    print("\nthe remembering step alone (items built beforehand)\n| contender | us/event |\n|---|---|")
    for name, values in alone.items():
        print(f"| {name} | {statistics.median(values) / count * 1e6:.3f} |")


if __name__ == "__main__":
    main()
