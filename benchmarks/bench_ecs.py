"""What the ECS fields cost the transform: ``ecs_fields`` against the whole ``document_for``.

Over every event of the shared corpus, measured side by side in one run (alternating
rounds, best of N): the full transform, ``ecs_fields`` alone, and ``ecs_fields`` without
its cheap pre-check and cache (every ``sourceIPAddress`` parsed by ``ipaddress``).

    .venv/bin/python benchmarks/bench_ecs.py [--rounds 7] [--corpus ../shared/corpus]
"""
from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from cloudtrail_es.documents.ecs import ecs_fields
from cloudtrail_es.documents.transform import document_for

ROOT = Path(__file__).resolve().parents[1]


def naive_ecs_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """The same result, parsing every address with ``ipaddress`` (the baseline)."""
    fields: dict[str, Any] = {"event": {"outcome": "failure" if event.get("errorCode") else "success"}}
    try:
        fields["source"] = {"ip": str(ipaddress.ip_address(event.get("sourceIPAddress")))}
    except ValueError:
        pass
    return fields


def best_seconds(function: Callable[[Any], Any], events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for event in events:
        function(event)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args()
    events = [event for path in sorted((args.corpus / "AWSLogs").rglob("*.json.gz"))
              for event in json.loads(gzip.decompress(path.read_bytes()))["Records"]]
    candidates = {"document_for": document_for, "ecs_fields": ecs_fields,
                  "ecs_fields, naive": naive_ecs_fields}
    best = {name: float("inf") for name in candidates}
    for _ in range(args.rounds):
        for name, function in candidates.items():
            best[name] = min(best[name], best_seconds(function, events))
    for name, seconds in best.items():
        print(f"{name:20} {seconds * 1e6 / len(events):7.2f} us/event "
              f"({seconds / best['document_for']:6.1%} of document_for)")
    print(f"{len(events)} events, best of {args.rounds} rounds")


if __name__ == "__main__":
    main()
