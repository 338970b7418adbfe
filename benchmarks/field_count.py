"""How many fields a month's index holds: distinct leaf keys per month on the shared corpus.

    python benchmarks/field_count.py                       # from the transform's output only
    python benchmarks/field_count.py --url http://127.0.0.1:9320   # and from the real mapping

For every month of the corpus (``../shared/corpus/AWSLogs`` or ``--corpus``) it counts the
distinct leaf paths of the documents ``transform.document_for`` makes (what dynamic
mapping adds to our explicit mapping). With ``--url`` it also loads each month into a
scratch index (``fieldcount-<random>-YYYY-MM``, our index body, 0 replicas), reads the
mapping the cluster ended with, counts its fields as ``index.mapping.total_fields.limit``
does (every property, objects included, and multi-fields) and deletes the index.
Compare with ``indexes.TOTAL_FIELDS_LIMIT``.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.read import keys  # noqa: E402
from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import bulk_item  # noqa: E402
from cloudtrail_es.write.indexes import TOTAL_FIELDS_LIMIT, index_body  # noqa: E402
from cloudtrail_es.read.sources import events_in  # noqa: E402


def leaf_paths(document: dict[str, Any], prefix: str = "") -> Iterable[str]:
    for name, value in document.items():
        if isinstance(value, dict):
            yield from leaf_paths(value, f"{prefix}{name}.")
        else:
            yield prefix + name


def mapped_fields(properties: dict[str, Any]) -> int:
    """Fields as the total-fields limit counts them: each property, objects included, and sub-fields."""
    count = 0
    for spec in properties.values():
        count += 1 + len(spec.get("fields", {}))
        count += mapped_fields(spec.get("properties", {}))
    return count


def months(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted((corpus / "AWSLogs").rglob("*.json.gz")):
        key = str(path.relative_to(corpus))
        if keys.is_log_file_key(key):
            events[keys.index_name_for(key, "")[1:]].extend(events_in(path.read_bytes()))
    return events


def cluster_fields(url: str, month: str, events: list[dict[str, Any]]) -> int:
    index = f"fieldcount-{uuid.uuid4().hex[:8]}-{month}"
    requests.put(f"{url}/{index}", json=index_body(1, 0), timeout=60).raise_for_status()
    try:
        body = b"".join(bulk_item(index, transform.document_id(e), transform.document_for(e)).lines
                        for e in events)
        answer = requests.post(f"{url}/_bulk?refresh=true", data=body, timeout=300,
                               headers={"Content-Type": "application/x-ndjson"}).json()
        rejected = sum(1 for item in answer["items"] if item["index"]["status"] >= 300)
        if rejected:
            print(f"  ({month}: {rejected} documents rejected)", file=sys.stderr)
        mapping = requests.get(f"{url}/{index}/_mapping", timeout=60).json()[index]["mappings"]
        return mapped_fields(mapping.get("properties", {}))
    finally:
        requests.delete(f"{url}/{index}", timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--url", help="an OpenSearch to load each month into and count its mapping")
    args = parser.parse_args()
    by_month = months(args.corpus)
    explicit = mapped_fields(index_body(1, 0)["mappings"]["properties"])
    print(f"explicit mapping: {explicit} fields; limit per index: {TOTAL_FIELDS_LIMIT}")
    print("| month | events | distinct leaf keys | mapped fields |")
    print("|---|---:|---:|---:|")
    leaves_max = fields_max = 0
    for month, events in sorted(by_month.items()):
        leaves = {path for event in events for path in leaf_paths(transform.document_for(event))}
        fields = cluster_fields(args.url.rstrip("/"), month, events) if args.url else None
        leaves_max = max(leaves_max, len(leaves))
        fields_max = max(fields_max, fields or 0)
        print(f"| {month} | {len(events)} | {len(leaves)} | {'' if fields is None else fields} |")
    print(f"\nmost in one month: {leaves_max} distinct leaf keys"
          + (f", {fields_max} mapped fields" if args.url else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
