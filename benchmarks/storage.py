"""Storage per million events: our index against the seed project's layout, on the same events.

    OPENSEARCH_PORT=9210 python benchmarks/storage.py            # ~207,000 events, a few minutes
    OPENSEARCH_PORT=9210 python benchmarks/storage.py --min-events 50000 --keep

What it does, for each layout in turn, on the same events in the same order:

1. reads every event of the shared corpus (``../shared/corpus/AWSLogs``, or ``--corpus``)
   and repeats the whole corpus until there are at least ``--min-events`` (200,000) events;
   every copy after the first gets fresh ``eventID``, ``requestID`` and ``sharedEventID``
   values of the same shape (each is unique per API call in real CloudTrail); the rest of
   each event is unchanged. Copies
   follow one another (corpus, corpus, ...), so no event sits next to its own copy and
   stored-field compression sees the corpus's natural order, not duplicates;
2. creates one index (1 shard, 0 replicas) with that layout's settings and mapping and
   writes every document with ``_bulk``, counting the items the cluster rejected;
3. refreshes, ``_forcemerge?max_num_segments=1``, and reads
   ``_stats/store`` -> ``primaries.store.size_in_bytes``.

The layouts:

* **ours**: ``cloudtrail_es.write.indexes.index_body`` and ``cloudtrail_es.documents.transform.document_for``,
  serialised as the loader sends them (``cloudtrail_es.write.bulk.dumps``). ``--ours-body FILE``
  measures another index body (JSON) with our transform instead, e.g. an older mapping.
* **seed**: the layout documented by the project this one started from
  (kdgregory's cloudtrail-to-elasticsearch): dynamic mapping (every string ``text`` with a
  ``.keyword`` sub-field, date detection on), dynamic templates mapping
  ``requestParameters_flattened.*``, ``responseElements_flattened.*`` and
  ``resources_flattened.*`` as ``text``, ``apiVersion`` as ``text``,
  ``index.mapping.total_fields.limit`` 8192, the default codec. Its transform is
  re-implemented below (``seed_document``, ``seed_index_body``): written here after reading
  its README and processor, for comparison only; it is not the loader's code path.

``--compare NAME=FILE`` adds a row for another index body (JSON) with our transform, e.g.
the mapping before a change (``git show REV:src/cloudtrail_es/indexes.py``, then its
``index_body(1, 0)`` dumped to a file).

It prints a markdown table (bytes per 1,000,000 events and the ratio ours/seed) and writes it
to ``build/storage.md``. When the node's data directory is readable from here (a local
cluster), it also breaks each index down by Lucene file type. The indexes are deleted at the
end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import dumps as our_dumps  # noqa: E402
from cloudtrail_es.write.indexes import index_body  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
MIN_EVENTS = 200_000
CHUNK_DOCS = 1000
CHUNK_BYTES = 5 * 1024 * 1024
#: Seeds the fresh ids of the copies, so two runs index byte-identical documents.
ID_SEED = 20673

# --------------------------------------------------------------------------------------
# The seed's layout, for comparison only (re-implemented from its documentation).
# --------------------------------------------------------------------------------------

#: The three objects the seed flattens; everything else is left to dynamic mapping.
SEED_FLATTENED = ("requestParameters", "responseElements", "resources")


def seed_index_body() -> dict[str, Any]:
    """The seed's index: explicit settings, dynamic mapping plus four explicit choices."""
    templates = [
        {f"flattened_{name}": {"path_match": f"{name}_flattened.*", "mapping": {"type": "text"}}}
        for name in SEED_FLATTENED
    ]
    return {
        "settings": {
            "index.mapping.total_fields.limit": 8192,
            "index.number_of_shards": 1,
            "index.number_of_replicas": 0,
        },
        "mappings": {
            "dynamic_templates": templates,
            "properties": {"apiVersion": {"type": "text"}},
        },
    }


def _seed_collect(value: Any, holder: str, into: dict[str, dict[Any, None]]) -> None:
    """Leaf key -> distinct leaf values; list elements belong to the key holding the list.

    Blank keys are skipped; ``null`` leaves are kept (the seed turns them into ``"None"``);
    values are de-duplicated as Python values (so ``true`` and ``1`` are one value).
    """
    if isinstance(value, dict):
        for key, child in value.items():
            if key:
                _seed_collect(child, key, into)
    elif isinstance(value, list):
        for child in value:
            _seed_collect(child, holder, into)
    else:
        into.setdefault(holder, {})[value] = None


def seed_document(event: dict[str, Any]) -> dict[str, Any]:
    """The seed's document for one event: three objects flattened, the rest left as is.

    An absent or empty object is dropped; a scalar where an object belongs stays as it
    is. An object or list becomes ``<name>_raw`` (``json.dumps`` with its default
    spacing and ASCII escapes) and ``<name>_flattened`` (leaf key with dots replaced by
    ``_`` -> list of ``str()`` of each distinct value, so ``True``/``None`` as Python
    spells them).
    """
    document = dict(event)
    for name in SEED_FLATTENED:
        value = document.pop(name, None)
        if not value:
            continue
        if not isinstance(value, (dict, list)):
            document[name] = value
            continue
        leaves: dict[str, dict[Any, None]] = {}
        _seed_collect(value, name, leaves)
        document[name + "_raw"] = json.dumps(value)
        document[name + "_flattened"] = {
            key.replace(".", "_"): [str(leaf) for leaf in values]
            for key, values in leaves.items()
        }
    return document


def seed_dumps(document: dict[str, Any]) -> bytes:
    """As the seed sends a document: ``json.dumps`` with its defaults."""
    return json.dumps(document).encode("utf-8")


# --------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------


def corpus_events(corpus: Path) -> list[dict[str, Any]]:
    files = sorted((corpus / "AWSLogs").rglob("*.json.gz"))
    if not files:
        raise SystemExit(f"no CloudTrail files under {corpus / 'AWSLogs'}")
    events: list[dict[str, Any]] = []
    for path in files:
        events.extend(json.loads(gzip.decompress(path.read_bytes()))["Records"])
    return events


#: Identifiers that CloudTrail makes unique per API call; each copy of an event gets fresh ones.
FRESH_IDS = ("eventID", "requestID", "sharedEventID")
_HEX = "0123456789abcdef"
_CLASSES = ("0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fresh_id(value: str, rng: random.Random) -> str:
    """A random identifier of the same shape: each character redrawn from its class.

    A lowercase-hex identifier (a UUID) stays lowercase hex; otherwise digits stay digits
    and letters stay letters of the same case; dashes and the like are kept.
    """
    is_hex = all(ch in _HEX or not ch.isalnum() for ch in value)
    chars = []
    for ch in value:
        if is_hex and ch in _HEX:
            chars.append(rng.choice(_HEX))
            continue
        for cls in _CLASSES:
            if ch in cls:
                chars.append(rng.choice(cls))
                break
        else:
            chars.append(ch)
    return "".join(chars)


def replicated(events: list[dict[str, Any]], min_events: int) -> tuple[int, Callable[[], Iterator[dict]]]:
    """(count, a function yielding the same events, in the same order, every time it is called)."""
    copies = max(1, -(-min_events // len(events)))

    def generate() -> Iterator[dict[str, Any]]:
        rng = random.Random(ID_SEED)
        for copy in range(copies):
            for event in events:
                if copy == 0:
                    yield event
                    continue
                fresh = dict(event)
                for name in FRESH_IDS:
                    if isinstance(event.get(name), str):
                        fresh[name] = fresh_id(event[name], rng)
                yield fresh

    return copies * len(events), generate


# --------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------


def _chunks(lines: Iterable[bytes]) -> Iterator[bytes]:
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        chunk.append(line)
        size += len(line)
        if len(chunk) >= CHUNK_DOCS or size >= CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield b"".join(chunk)


def load(session: requests.Session, url: str, index: str, body: dict[str, Any],
         documents: Iterable[tuple[str, bytes]]) -> Counter:
    """Create the index and bulk-write; returns outcome counts (``indexed`` and error types)."""
    session.delete(f"{url}/{index}", timeout=120)
    response = session.put(f"{url}/{index}", json=body, timeout=120)
    response.raise_for_status()
    lines = (
        b"%s\n%s\n" % (json.dumps({"index": {"_index": index, "_id": doc_id}}).encode(), source)
        for doc_id, source in documents
    )
    outcomes: Counter = Counter()
    for chunk in _chunks(lines):
        response = session.post(f"{url}/_bulk", data=chunk, timeout=600,
                                headers={"Content-Type": "application/x-ndjson"})
        response.raise_for_status()
        for item in response.json()["items"]:
            result = next(iter(item.values()))
            if result["status"] < 300:
                outcomes["indexed"] += 1
            else:
                outcomes[result.get("error", {}).get("type", str(result["status"]))] += 1
    return outcomes


def compact(session: requests.Session, url: str, index: str) -> dict[str, Any]:
    session.post(f"{url}/{index}/_refresh", timeout=600).raise_for_status()
    session.post(f"{url}/{index}/_forcemerge", params={"max_num_segments": 1},
                 timeout=3600).raise_for_status()
    session.post(f"{url}/{index}/_refresh", timeout=600).raise_for_status()
    stats = session.get(f"{url}/{index}/_stats/store,docs,segments", timeout=120).json()
    primaries = stats["indices"][index]["primaries"]
    return {
        "bytes": primaries["store"]["size_in_bytes"],
        "docs": primaries["docs"]["count"],
        "segments": primaries["segments"]["count"],
    }


#: Lucene file extensions, grouped by what they hold.
FILE_KINDS = {
    "fdt": "stored fields (_source, _id)", "fdx": "stored fields (_source, _id)",
    "fdm": "stored fields (_source, _id)",
    "tim": "terms dictionary", "tip": "terms dictionary", "tmd": "terms dictionary",
    "doc": "postings (docs, freqs)", "pos": "positions", "pay": "positions",
    "dvd": "doc values", "dvm": "doc values",
    "nvd": "norms", "nvm": "norms",
    "kdd": "points (dates)", "kdi": "points (dates)", "kdm": "points (dates)",
}


def breakdown(session: requests.Session, url: str, index: str) -> dict[str, int] | None:
    """Bytes per Lucene file kind, when the node's data directory is readable from here."""
    try:
        uuid_ = session.get(f"{url}/{index}/_settings", timeout=30).json()[index][
            "settings"]["index"]["uuid"]
        nodes = session.get(f"{url}/_nodes/settings", params={"filter_path": "**.path.data"},
                            timeout=30).json()["nodes"]
        data_dirs = [d for node in nodes.values() for d in node["settings"]["path"]["data"]]
    except (requests.RequestException, KeyError, ValueError):
        return None
    for data in data_dirs:
        directory = Path(data) / "nodes" / "0" / "indices" / uuid_ / "0" / "index"
        if directory.is_dir():
            kinds: Counter = Counter()
            for path in directory.iterdir():
                ext = path.suffix.lstrip(".")
                kinds[FILE_KINDS.get(ext, "other")] += path.stat().st_size
            return dict(kinds)
    return None


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def per_million(result: dict[str, Any]) -> float:
    return result["bytes"] / result["docs"] * 1_000_000


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(events: int, results: dict[str, dict[str, Any]], took: dict[str, float]) -> str:
    seed = per_million(results["seed"])
    lines = [
        f"Events written to each index: **{events:,}** (the shared corpus of "
        f"{events // results['_copies']:,} events, {results['_copies']} times; "
        "fresh eventID/requestID/sharedEventID in each copy after the first). "
        "1 shard, 0 replicas, refreshed, force-merged to one segment; "
        "size = `_stats/store` primaries.store.size_in_bytes.",
        "",
        "| layout | docs indexed | rejected | store bytes | bytes per 1,000,000 events "
        "| ratio to seed | load s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [n for n in results if not n.startswith("_")]:
        result = results[name]
        value = per_million(result)
        lines.append(
            f"| {name} | {result['docs']:,} | {result['rejected']:,} | {result['bytes']:,} "
            f"| {value:,.0f} ({mib(value)}) | {value / seed:.3f} | {took[name]:.0f} |")
    rejected = {n: r["rejections"] for n, r in results.items()
                if not n.startswith("_") and r["rejections"]}
    if rejected:
        lines += ["", "Rejected items by error type (bytes per million count indexed documents "
                  "only): " + "; ".join(f"{n}: {dict(r)}" for n, r in rejected.items())]
    kinds = {n: r["breakdown"] for n, r in results.items()
             if not n.startswith("_") and r.get("breakdown")}
    if kinds:
        names = list(kinds)
        every_kind = sorted({k for b in kinds.values() for k in b},
                            key=lambda k: -max(b.get(k, 0) for b in kinds.values()))
        lines += ["", "Where the bytes are (Lucene files, bytes per 1,000,000 events):", "",
                  "| file kind | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        for kind in every_kind:
            cells = [mib(kinds[n].get(kind, 0) / results[n]["docs"] * 1_000_000) for n in names]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--min-events", type=int, default=MIN_EVENTS)
    parser.add_argument("--ours-body", type=Path,
                        help="measure this index body (JSON) with our transform, not index_body()")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=FILE",
                        help="also measure this index body (JSON) with our transform, as NAME "
                             "(repeatable), e.g. an older mapping")
    parser.add_argument("--only", choices=("ours", "seed"), help="measure one layout only")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "storage.md")
    parser.add_argument("--keep", action="store_true", help="keep the indexes afterwards")
    args = parser.parse_args(argv)

    url = os.environ.get("OPENSEARCH_URL",
                         f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}")
    session = requests.Session()
    try:
        session.get(url, timeout=10).raise_for_status()
    except requests.RequestException as exc:
        raise SystemExit(f"OpenSearch is not reachable at {url}: {exc}") from None

    base = corpus_events(args.corpus)
    count, generate = replicated(base, args.min_events)
    ours_body = (json.loads(args.ours_body.read_text()) if args.ours_body
                 else index_body(shards=1, replicas=0))
    layouts = {
        "ours": (ours_body, lambda: ((transform.document_id(e), our_dumps(transform.document_for(e)))
                                     for e in generate())),
        "seed": (seed_index_body(), lambda: ((e["eventID"], seed_dumps(seed_document(e)))
                                             for e in generate())),
    }
    compared = {}
    for spec in args.compare:
        name, _, path = spec.partition("=")
        if not name or not path or name in layouts or name in compared:
            parser.error(f"--compare wants NAME=FILE with a new NAME, not {spec!r}")
        compared[name] = (json.loads(Path(path).read_text()), layouts["ours"][1])
    layouts = {**compared, **layouts}
    if args.only:
        layouts = {args.only: layouts[args.only]}

    results: dict[str, Any] = {"_copies": count // len(base)}
    took: dict[str, float] = {}
    suffix = f"{os.getpid()}-{int(time.time())}"
    for name, (body, documents) in layouts.items():
        index = f"storage-{re.sub('[^a-z0-9]+', '-', name.lower()).strip('-')}-{suffix}"
        print(f"{name}: writing {count:,} events to {index}", file=sys.stderr, flush=True)
        start = time.monotonic()
        outcomes = load(session, url, index, body, documents())
        took[name] = time.monotonic() - start
        print(f"{name}: {dict(outcomes)} in {took[name]:.0f} s; force-merging",
              file=sys.stderr, flush=True)
        result = compact(session, url, index)
        result["rejected"] = sum(n for k, n in outcomes.items() if k != "indexed")
        result["rejections"] = {k: n for k, n in outcomes.items() if k != "indexed"}
        result["breakdown"] = breakdown(session, url, index)
        results[name] = result
        if not args.keep:
            session.delete(f"{url}/{index}", timeout=120)

    if "seed" not in results:
        for name, result in results.items():
            if not name.startswith("_"):
                print(f"{name}: {result['docs']:,} docs, {result['bytes']:,} bytes, "
                      f"{per_million(result):,.0f} bytes per million events "
                      f"({mib(per_million(result))}); {result['breakdown']}")
        return 0
    text = report(count, results, took)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Storage per million events\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
