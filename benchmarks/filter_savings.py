"""What cost filters would save on a set of CloudTrail files: share of events and of bytes.

    python benchmarks/filter_savings.py                      # the shared corpus, the candidates below
    python benchmarks/filter_savings.py --corpus DIR --rule 'eventName=Get*' --rule '...'

Every event of every ``*.json.gz`` / ``*.json`` file under ``DIR/AWSLogs`` (default: the
shared corpus, ``../shared/corpus``) is read with the loader's decoder and checked against
each candidate rule with the loader's matcher (``cloudtrail_es.core.filters``). For each rule it
reports the events it removes and their share, and the share of ``_bulk`` bytes (the action
line and document the loader would send for them: what indexing and storage cost grows
with). Rules are sorted by the events they remove; the top three together (an event that
several match counted once) close the table. Output: a markdown table on stdout, then the
cost of the check itself: the issue's example rules (``EXAMPLE``) against every event, beside
the transform of every event, best of 7 rounds each, alternated, in this one process.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import bulk_item  # noqa: E402
from cloudtrail_es.core.filters import parse_rules  # noqa: E402
from cloudtrail_es.read.sources import iter_events  # noqa: E402

#: One rule each (no ``;``): the noise operators ask to drop, read-only calls,
#: KMS calls AWS services make on a user's behalf, data events; and narrower forms of each.
CANDIDATES = (
    "readOnly=true",
    "eventName=Describe*",
    "eventName=List*",
    "eventName=Get*",
    "readOnly=true,userIdentity.type=AWSService",
    "eventSource=kms.amazonaws.com,userIdentity.type=AWSService",
    "eventName=Decrypt,userIdentity.type=AWSService",
    "eventSource=kms.amazonaws.com,eventName=Decrypt",
    "managementEvent=false",
    "eventSource=s3.amazonaws.com,eventName=GetObject",
    "eventSource=sts.amazonaws.com,eventName=AssumeRole",
    "eventName=AssumeRole,userIdentity.type=AWSService",
)
TOP = 3
EXAMPLE = "readOnly=true,eventSource=ec2.amazonaws.com;eventName=Decrypt,userIdentity.type=AWSService"


def measure(corpus: Path, rules: list[str]) -> tuple[int, int, list[tuple[str, int, int, set[int]]]]:
    """(events, bytes, [(rule, events removed, bytes removed, positions removed)])."""
    filters = [parse_rules(rule) for rule in rules]
    removed: list[tuple[int, int, set[int]]] = [(0, 0, set()) for _ in rules]
    events = size = 0
    files = sorted(p for p in (corpus / "AWSLogs").rglob("*") if p.name.endswith((".json.gz", ".json")))
    for path in files:
        for event in iter_events(path.read_bytes()):
            cost = len(bulk_item("cloudtrail-x", transform.document_id(event),
                                 transform.document_for(event)).lines)
            for n, candidate in enumerate(filters):
                if candidate.excludes(event):
                    count, total, positions = removed[n]
                    positions.add(events)
                    removed[n] = (count + 1, total + cost, positions)
            events += 1
            size += cost
    return events, size, [(rule, *removed[n]) for n, rule in enumerate(rules)]


def table(corpus: Path, rules: list[str]) -> str:
    events, size, results = measure(corpus, rules)
    results.sort(key=lambda row: (-row[1], row[0]))
    lines = [f"{events:,} events, {size / 1e6:,.1f} MB of `_bulk` NDJSON "
             f"({corpus.name if corpus.name != 'corpus' else 'shared corpus'})", "",
             "| rule (`--exclude` / `EXCLUDE_EVENTS`) | events removed | share of events "
             "| share of bytes |", "|---|---:|---:|---:|"]
    for rule, count, removed_bytes, _ in results:
        lines.append(f"| `{rule}` | {count:,} | {count / events:.1%} | {removed_bytes / size:.1%} |")
    top = results[:TOP]
    union = set().union(*(positions for *_, positions in top))
    together = measure(corpus, [";".join(rule for rule, *_ in top)])[2][0]
    lines += ["", f"The top {len(top)} together (`{together[0]}`): {together[1]:,} events "
              f"({together[1] / events:.1%} of events, {together[2] / size:.1%} of bytes)."]
    assert together[1] == len(union)
    return "\n".join(lines)


def check_cost(corpus: Path, rounds: int = 7) -> str:
    """Per-event cost of the exclusion check against that of the transform, side by side."""
    events = [event for path in sorted((corpus / "AWSLogs").rglob("*.json.gz"))
              for event in iter_events(path.read_bytes())]
    rules = parse_rules(EXAMPLE)
    best = {"check": float("inf"), "transform": float("inf")}
    for _ in range(rounds):
        started = time.perf_counter()
        for event in events:
            rules.excludes(event)
        best["check"] = min(best["check"], time.perf_counter() - started)
        started = time.perf_counter()
        for event in events:
            transform.document_for(event)
        best["transform"] = min(best["transform"], time.perf_counter() - started)
    per_event = {name: seconds / len(events) * 1e6 for name, seconds in best.items()}
    return (f"Exclusion check (`{EXAMPLE}`): {per_event['check']:.2f} µs/event; transform: "
            f"{per_event['transform']:.1f} µs/event; ratio {best['check'] / best['transform']:.3f} "
            f"({len(events):,} events, best of {rounds}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--rule", action="append", help="a rule to measure (default: the candidates)")
    args = parser.parse_args()
    print(table(args.corpus, args.rule or list(CANDIDATES)))
    print()
    print(check_cost(args.corpus))


if __name__ == "__main__":
    main()
