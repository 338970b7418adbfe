"""CPU per event of the client path, and memory/time through hostile files: `make bench`.

No cluster needed. Two tables, printed and written to build/bench_cpu.md:

1. **Events per CPU-second** over the shared corpus (``../shared/corpus/AWSLogs``), one
   thread, side by side in one process: every contender handles every file's gzipped bytes
   as read from disk, builds one ``_bulk`` action line + document per event, and gzips the
   bodies (level 1, chunks of 2,000 documents / 5 MiB, as the loader does; the original
   path's with zlib). Rounds alternate the contenders (the order rotates each round); the
   figure is the median of the rounds,
   events / ``time.process_time()`` seconds.

   * original: the seed project's documented path, re-implemented in ``benchmarks/storage.py``
     (gunzip, ``json.loads`` of the whole file, its flatten of three objects into dotted
     keys, ``json.dumps`` of action and document);
   * ours: ``decoder.iter_events`` (gunzip + decode), ``transform.document_id`` /
     ``document_for``, ``bulk.bulk_item``;
   * ours, the whole write path: ``Pipeline.load`` of groups of 20 files through a
     ``BulkWriter`` whose cluster answers every item 201 at once (chunking, gzip, the answer
     parsed, every event settled on its file);
   * floor: gunzip + ``json.loads`` + ``orjson.dumps`` of the untouched event (the least any
     Python loader does), gzip by the library ours uses (``gzipped``: ISA-L when installed),
     and the same floor with the standard library's zlib.

   With ``--instructions N``, the same contenders also run once each over the first N files
   under ``valgrind --tool=callgrind`` in a fresh interpreter: instructions per event (less
   those of a run that only loads the files), a figure the other loads of a shared machine
   do not move.

   The process's garbage collector is tuned as the loader tunes its own (``core.gctuning``)
   unless ``--gc default``.

2. **Hostile files**, each in a fresh interpreter (peak RSS = its ``ru_maxrss``, imports
   included; seconds = wall time of ``list(iter_events(data))`` with the file's bytes
   already in memory): a 1 GiB whitespace decompression bomb (~1 MB gzipped) and a file
   holding one event with a 200 MB string.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cloudtrail_es.core import gctuning, gzipped  # noqa: E402
from cloudtrail_es.read import decoder  # noqa: E402
from cloudtrail_es.documents import transform  # noqa: E402
from cloudtrail_es.write.bulk import BulkWriter, bulk_item  # noqa: E402
from cloudtrail_es.write.engine import Engine  # noqa: E402
from cloudtrail_es.write.pipeline import FileLoad, Pipeline  # noqa: E402
from cloudtrail_es.core.refs import ObjectRef  # noqa: E402
from storage import seed_document, seed_dumps  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "AWSLogs"
REPORT = ROOT / "build" / "bench_cpu.md"
CHUNK_DOCS = 2000
CHUNK_BYTES = 5 * 1024 * 1024
GZIP_LEVEL = 1
INDEX = "cloudtrail-2024-01"
GZIP_LIBRARY = "ISA-L" if gzipped.LIBRARY == "isal" else "zlib"

TARGET_EPS = 80_000
TARGET_RSS_MB = 300
TARGET_STRING_SECONDS = 10.0

try:
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]


def _stdlib_gzip(body: bytes) -> bytes:
    return gzip.compress(body, GZIP_LEVEL)


def _stdlib_gunzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _gunzip(data: bytes) -> bytes:
    """As the loader inflates (``gzipped``: ISA-L when installed)."""
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = gzipped.inflater()
    return inflater.decompress(data) + inflater.flush()  # type: ignore[no-any-return]


class Bodies:
    """Gzipped ``_bulk`` bodies built as the loader chunks them; only their size is kept."""

    def __init__(self, compress: Callable[[bytes], bytes] = gzipped.compress) -> None:
        self.compress = compress
        self.lines: list[bytes] = []
        self.size = 0
        self.compressed = 0

    def add(self, lines: bytes) -> None:
        self.lines.append(lines)
        self.size += len(lines)
        if len(self.lines) >= CHUNK_DOCS or self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.compressed += len(self.compress(b"".join(self.lines)))
        self.lines, self.size = [], 0


def original(files: list[bytes]) -> int:
    bodies, count = Bodies(_stdlib_gzip), 0
    for data in files:
        for event in json.loads(_stdlib_gunzip(data))["Records"]:
            action = {"index": {"_index": INDEX, "_id": event.get("eventID")}}
            bodies.add(b"%s\n%s\n" % (json.dumps(action).encode(), seed_dumps(seed_document(event))))
            count += 1
    bodies.flush()
    return count


def ours(files: list[bytes]) -> int:
    bodies, count = Bodies(), 0
    for data in files:
        for n, event in enumerate(decoder.iter_events(data)):
            if isinstance(event, dict):
                item = bulk_item(INDEX, transform.document_id(event), transform.document_for(event), n)
                bodies.add(item.lines)
            count += 1
    bodies.flush()
    return count


class _AnsweringCluster:
    """Answers every ``_bulk`` request "201 for each document", as a cluster would, instantly."""

    def __init__(self) -> None:
        self.sent = 0
        self._answers: dict[int, bytes] = {}

    def request(self, method: str, path: str, body: Any = None, *, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Any:
        answer = self._answers.get(self.sent)
        if answer is None:
            answer = self._answers[self.sent] = orjson.dumps(
                {"items": [{"index": {"status": 201}}] * self.sent})
        return SimpleNamespace(status_code=200, content=answer)


class _CountingWriter(BulkWriter):
    def _post(self, pending: Any) -> Any:
        self.cluster.sent = len(pending)  # type: ignore[attr-defined]
        return super()._post(pending)


def ours_pipeline(files: list[bytes]) -> int:
    """The loader's whole write path: ``Pipeline.load`` of groups of 20 files (the backfill's
    small-file grouping), chunking, gzip, the answer parsed and every event settled on its file."""
    pipeline = Pipeline(_CountingWriter(_AnsweringCluster()), Engine("opensearch", (2, 19)))  # type: ignore[arg-type]
    count = 0
    for start in range(0, len(files), 20):
        group = files[start:start + 20]
        loads = [FileLoad.of(ObjectRef("bench", str(start + n)), INDEX) for n in range(len(group))]
        pipeline.load(loads, lambda number, _, group=group: decoder.iter_events(group[number]),
                      time.monotonic() + 3600)
        count += sum(load.result.indexed for load in loads)
    return count


def _floor(files: list[bytes], gunzip: Callable[[bytes], bytes], bodies: Bodies) -> int:
    count = 0
    for data in files:
        for event in json.loads(gunzip(data))["Records"]:
            action = {"index": {"_index": INDEX, "_id": event.get("eventID")}}
            bodies.add(b"%s\n%s\n" % (orjson.dumps(action), orjson.dumps(event)))
            count += 1
    bodies.flush()
    return count


def floor(files: list[bytes]) -> int:
    return _floor(files, _gunzip, Bodies())


def floor_stdlib(files: list[bytes]) -> int:
    return _floor(files, _stdlib_gunzip, Bodies(_stdlib_gzip))


CONTENDERS: dict[str, tuple[str, Callable[[list[bytes]], int]]] = {
    "original": ("the original project's path (json.loads, its flatten, json.dumps)", original),
    "ours": ("ours (iter_events, document_for, bulk_item)", ours),
    "ours_pipeline": ("ours, the whole write path (Pipeline, BulkWriter; a stub answers 201)",
                      ours_pipeline),
    "floor": ("floor: gunzip + json.loads + orjson.dumps of the untouched event, "
              f"gzip by {GZIP_LIBRARY} as ours", floor),
    "floor_stdlib": ("the same floor, gzip by the standard library's zlib", floor_stdlib),
}


def load_files(corpus: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(corpus.rglob("*.json.gz"))]


def cpu_rounds(files: list[bytes], runs: int) -> dict[str, list[float]]:
    """events per CPU-second of each contender, each round; order rotated every round."""
    names = list(CONTENDERS)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(runs):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            started = time.process_time()
            count = CONTENDERS[name][1](files)
            rates[name].append(count / (time.process_time() - started))
    return rates


# --------------------------------------------------------------------------- hostile files

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from cloudtrail_es.read import decoder
if sys.argv[3] == "tuned":
    from cloudtrail_es.core import gctuning
    gctuning.tune()
data = open(sys.argv[1], "rb").read()
started, cpu = time.perf_counter(), time.process_time()
kinds = {}
for item in decoder.iter_events(data):
    kinds[type(item).__name__] = kinds.get(type(item).__name__, 0) + 1
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_kb": peak_kb, "yielded": kinds}))
"""


def whitespace_bomb(path: Path, gib: float = 1.0) -> None:
    """``{"Records":[`` + ~1 GiB of spaces + ``]}``, gzipped (level 9: ~1 MB)."""
    block = b" " * (1 << 20)
    with gzip.open(path, "wb", 9) as out:
        out.write(b'{"Records":[')
        for _ in range(int(gib * 1024)):
            out.write(block)
        out.write(b"]}")


def huge_string(path: Path, megabytes: int = 200) -> None:
    """One event whose ``requestParameters.blob`` is a string of ``megabytes`` MB, gzipped."""
    with gzip.open(path, "wb", 1) as out:
        out.write(b'{"Records":[{"eventID":"e1","eventName":"Small"},'
                  b'{"eventID":"huge","requestParameters":{"blob":"')
        chunk = b"abcdefghij" * (1 << 20)
        for _ in range(megabytes * 1000 * 1000 // len(chunk)):
            out.write(chunk)
        out.write(b'"}},{"eventID":"e3","eventName":"After"}]}')


def hostile(workdir: Path, gc_mode: str = "tuned") -> list[tuple[str, dict[str, Any]]]:
    results = []
    for name, build in (("1 GiB whitespace decompression bomb", whitespace_bomb),
                        ("one 200 MB string", huge_string)):
        path = workdir / (name.replace(" ", "_") + ".json.gz")
        build(path)
        finished = subprocess.run([sys.executable, "-c", CHILD, str(path), str(SRC), gc_mode],
                                  capture_output=True, text=True)
        path.unlink()
        if finished.returncode:
            results.append((name, {"error": finished.stderr[-400:]}))
        else:
            results.append((name, json.loads(finished.stdout.strip().splitlines()[-1])))
    return results


# --------------------------------------------------------------------------- report


INSTRUCTED = ("original", "ours", "ours_pipeline", "floor")


def instructions(corpus: Path, files: int, gc_mode: str) -> dict[str, float]:
    """Instructions per event of each contender over the first ``files`` files (callgrind)."""
    def collected(name: str) -> tuple[int, int]:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--child", name, "--files", str(files), "--corpus", str(corpus),
             "--gc", gc_mode], capture_output=True, text=True)
        found = [line for line in done.stderr.splitlines() if "Collected :" in line]
        if done.returncode != 0 or not found:
            raise RuntimeError(f"callgrind of {name} failed: {done.stderr[-500:]}")
        return int(found[-1].split(":")[-1]), int(done.stdout.strip().splitlines()[-1])

    base, _ = collected("none")
    per_event = {}
    for name in INSTRUCTED:
        total, events = collected(name)
        per_event[name] = (total - base) / events
    return per_event


def child(name: str, corpus: Path, files: int) -> int:
    """One contender, once, over the first ``files`` files: prints the events handled."""
    loaded = load_files(corpus)[:files]
    print(0 if name == "none" else CONTENDERS[name][1](loaded))
    return 0


def report(rates: dict[str, list[float]], events: int, files: int, runs: int,
           hostile_results: list[tuple[str, dict[str, Any]]],
           per_event: dict[str, float] | None = None, gc_mode: str = "tuned") -> str:
    medians = {name: statistics.median(values) for name, values in rates.items()}
    lines = [
        "# CPU per event and hostile files",
        "",
        f"- {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"{events:,} events in {files:,} files (the shared corpus), one thread",
        f"- each contender: gzipped file bytes -> events -> `_bulk` action + document -> gzip "
        f"level {GZIP_LEVEL} bodies of {CHUNK_DOCS:,} docs / {CHUNK_BYTES >> 20} MiB; median of "
        f"{runs} alternated rounds, events / CPU-seconds (`time.process_time`); garbage "
        f"collector {'tuned as the loader tunes it' if gc_mode == 'tuned' else 'at its defaults'}",
        "",
        "| path | events per CPU-second (median) | each round | x floor | instructions per "
        "event (callgrind) | x floor, by instructions | target |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    per_event = per_event or {}
    for name, (label, _) in CONTENDERS.items():
        target = f">= {TARGET_EPS:,}: {'yes' if medians[name] >= TARGET_EPS else '**no**'}" \
            if name.startswith("ours") else ""
        count = per_event.get(name)
        by_count = f"{per_event['floor'] / count:.2f}" if count and per_event.get("floor") else ""
        lines.append(f"| {label} | {medians[name]:,.0f} | "
                     f"{', '.join(f'{r:,.0f}' for r in rates[name])} | "
                     f"{medians[name] / medians['floor']:.2f} | "
                     f"{f'{count:,.0f}' if count else ''} | {by_count} | {target} |")
    if hostile_results:
        lines += ["", "| hostile file (fresh interpreter) | wall seconds | CPU seconds | peak RSS | "
                  "yielded | target |", "|---|---:|---:|---:|---|---|"]
        for name, result in hostile_results:
            if "error" in result:
                lines.append(f"| {name} | FAILED | | | {result['error']!r} | |")
                continue
            peak_mb = result["peak_kb"] / 1024
            ok = peak_mb <= TARGET_RSS_MB and (
                "string" not in name or result["seconds"] <= TARGET_STRING_SECONDS)
            lines.append(f"| {name} | {result['seconds']:.2f} | {result['cpu_seconds']:.2f} | "
                         f"{peak_mb:.0f} MB | "
                         f"{result['yielded']} | RSS <= {TARGET_RSS_MB} MB"
                         f"{f', <= {TARGET_STRING_SECONDS:g} s' if 'string' in name else ''}: "
                         f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--skip-hostile", action="store_true", help="only the CPU table")
    parser.add_argument("--output", type=Path, default=REPORT)
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned",
                        help="the garbage collector as the loader tunes it, or at its defaults")
    parser.add_argument("--instructions", type=int, default=0, metavar="FILES",
                        help="also count instructions per event over the first FILES files "
                             "(valgrind's callgrind; slow)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gc == "tuned":
        gctuning.tune()
    if args.child:
        return child(args.child, args.corpus, args.files)
    if not args.corpus.is_dir():
        print(f"bench_cpu: the corpus is not at {args.corpus}; give --corpus DIR", file=sys.stderr)
        return 2
    if orjson is None:
        print("bench_cpu: orjson is not installed (the floor uses it)", file=sys.stderr)
        return 2
    files = load_files(args.corpus)
    events = ours(files)
    rates = cpu_rounds(files, args.runs)
    hostile_results = [] if args.skip_hostile else hostile(Path(
        os.environ.get("TMPDIR", "/tmp")), args.gc)
    per_event = instructions(args.corpus, args.instructions, args.gc) if args.instructions else None
    table = report(rates, events, len(files), args.runs, hostile_results, per_event, args.gc)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
