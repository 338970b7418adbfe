"""A backfill run: files processed by parallel workers, progress, resumable state.

Each worker loads one file at a time (download, parse, transform, its own ``_bulk``
requests), so ``workers`` files and ``_bulk`` requests are in flight at once; no more
than ``2 x workers`` files are queued ahead, so memory stays flat however many files
a run covers.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator
from urllib.parse import quote_plus

from cloudtrail_es.read import keys
from cloudtrail_es.core.breaker import CircuitBreaker
from cloudtrail_es.core.errors import FileFailed, RetryDeadlineExceeded, StateFileError
from cloudtrail_es.write.indexes import index_body
from cloudtrail_es.core.results import RunResult
from cloudtrail_es.write.processor import Processor
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.retry import Backoff, Retry, retrying
from cloudtrail_es.read.decoder import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_FILE_BYTES, iter_events
from cloudtrail_es.core.filters import EventFilter
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.write.pipeline import FileLoad, Pipeline

log = logging.getLogger(__name__)


class StateFile:
    """The files a run completed, appended as each completes: one JSON string per line.

    The identity ``bucket/key`` is written as ``json.dumps`` spells it, so a key holding a
    newline (or anything else) stays one line and can never be read back as another file.
    Reading refuses anything else (StateFileError, a usage error) before any file loads,
    the old format (raw keys) included: its lines cannot be told from an injected one.
    A last line cut short by a crash is dropped (that file loads again; writes are idempotent).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self._lock = threading.Lock()
        if self.path.exists():
            self.done = self._read()

    def _read(self) -> set[str]:
        try:
            text = self.path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise StateFileError(f"cannot read the state file {self.path}: {exc}") from exc
        lines = text.split("\n")
        last = lines.pop()  # "" when the file ends with a newline, as every complete write does
        torn = last.startswith('"') and not _is_json_string(last)  # a write cut short by a crash
        if last and not torn:
            lines.append(last)
        done = set()
        for number, line in enumerate(lines, 1):
            if not _is_json_string(line):
                raise StateFileError(
                    f"the state file {self.path} is corrupt at line {number}: expected one JSON "
                    "string (\"bucket/key\") per line. A file of an older version (raw keys) is "
                    "not trusted: remove it and rerun (writes are idempotent), or give another --state")
            done.add(json.loads(line))
        if torn:
            log.warning("state file: an incomplete last line dropped (that file loads again)",
                        extra={"state": str(self.path)})
        if last:  # so that the next line appended starts on a line of its own
            self._rewrite(done)
        return done

    def _rewrite(self, done: set[str]) -> None:
        partial = self.path.with_name(self.path.name + ".tmp")
        try:
            partial.write_text("".join(json.dumps(identity) + "\n" for identity in sorted(done)))
            partial.replace(self.path)
        except OSError as exc:
            raise StateFileError(f"cannot rewrite the state file {self.path}: {exc}") from exc

    def mark(self, ref: ObjectRef) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(self.identity(ref)) + "\n")
        self.done.add(self.identity(ref))

    def __contains__(self, ref: ObjectRef) -> bool:
        return self.identity(ref) in self.done

    @staticmethod
    def identity(ref: ObjectRef) -> str:
        return f"{ref.bucket}/{ref.key}"


def _is_json_string(line: str) -> bool:
    try:
        return isinstance(json.loads(line), str)
    except ValueError:
        return False


class Progress:
    """A bar redrawn in place on a terminal; a plain log line every ``interval`` s elsewhere."""

    def __init__(self, total_files: int, total_bytes: int, stream: IO[str] | None = None,
                 interval: float = 10.0, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total_files, self.total_bytes = total_files, total_bytes
        self.files = self.events = self.bytes = self.failed = 0
        self.enabled, self.interval, self.clock = enabled, interval, clock
        self.started = self.last_drawn = clock()

    def add(self, ref: ObjectRef, events: int = 0, failed: bool = False) -> None:
        self.files += 1
        self.events += events
        self.bytes += ref.size
        self.failed += failed
        now = self.clock()
        if self.enabled and (self.tty or now - self.last_drawn >= self.interval):
            self.draw(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.events / elapsed
        done = self.bytes / self.total_bytes if self.total_bytes else self.files / max(self.total_files, 1)
        return (f"files {self.files}/{self.total_files} | events {self.events} | {rate:,.0f} events/s"
                f" | {self.bytes / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB"
                f" | ETA {eta_text(elapsed, done)} | failed {self.failed}")

    def draw(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.last_drawn = now
        if self.tty:
            width = 30
            share = self.files / max(self.total_files, 1)
            bar = "#" * int(share * width) + "-" * (width - int(share * width))
            self.stream.write(f"\r[{bar}] {self.line(now)}\x1b[K")
            self.stream.flush()
        else:
            log.info("progress: " + self.line(now))

    def close(self) -> None:
        if self.enabled:
            self.draw()
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


#: No ETA before this many seconds and this share of the bytes: early rates are mostly noise
#: (index creation, the first connections), and an ETA drawn from them is wild.
ETA_AFTER_SECONDS = 5.0
ETA_AFTER_SHARE = 0.05


def eta_text(elapsed: float, done: float) -> str:
    """``MmSSs`` left at the rate so far; ``--`` until enough is done to say, ``0m00s`` when done."""
    if done >= 1:
        return "0m00s"
    if elapsed < ETA_AFTER_SECONDS or done < ETA_AFTER_SHARE:
        return "--"
    eta = int(elapsed / done - elapsed)
    return f"{eta // 60}m{eta % 60:02d}s"


#: Files loaded together by one worker, so that small files share ``_bulk`` requests:
#: up to this many compressed bytes (about 10x that as NDJSON) or files.
GROUP_BYTES = 256 * 1024
GROUP_FILES = 200


def groups(objects: Iterable[ObjectRef], skipped: list[ObjectRef]) -> Iterable[list[ObjectRef]]:
    """Consecutive log files grouped by size; other objects go to ``skipped``."""
    group: list[ObjectRef] = []
    size = 0
    for ref in objects:
        if not keys.is_log_file_key(ref.key):
            skipped.append(ref)
            continue
        group.append(ref)
        size += ref.size
        if size >= GROUP_BYTES or len(group) >= GROUP_FILES:
            yield group
            group, size = [], 0
    if group:
        yield group


class _Collector:
    """Takes finished groups into the run: results, state and progress, file by file."""

    def __init__(self, run: RunResult, state: StateFile | None, progress: Progress | None) -> None:
        self.run, self.state, self.progress = run, state, progress
        self.in_flight: dict[Future[list[Any]], list[ObjectRef]] = {}

    def wait(self, until: str = FIRST_COMPLETED) -> None:
        done, _ = wait(self.in_flight, return_when=until)
        for future in done:
            self.collect(future)

    def collect(self, future: Future[list[Any]]) -> None:
        """Each file of a finished group in turn: the ones taken leave ``in_flight`` one by one,
        so an interrupt in between loses none (``collect_finished`` takes the rest)."""
        if future.cancelled():
            del self.in_flight[future]
            return
        outcomes = future.result()
        while self.in_flight[future]:
            refs = self.in_flight[future]
            outcome = outcomes[len(outcomes) - len(refs)]
            with _interrupt_deferred():  # taken whole, once: in the run, the state and in_flight
                self.record(refs[0], outcome)
                self.in_flight[future] = refs[1:]
            if self.progress:
                failed = isinstance(outcome, FileFailed)
                self.progress.add(refs[0], events=0 if failed else outcome.events_read, failed=failed)
        del self.in_flight[future]

    def collect_finished(self) -> None:
        """The groups already done, without waiting for the others."""
        for future in [f for f in self.in_flight if f.done()]:
            self.collect(future)

    def record(self, ref: ObjectRef, outcome: Any) -> None:
        if isinstance(outcome, FileFailed):
            self.run.failed.append(outcome)
        else:
            self.run.loaded.append(outcome)
            if self.state is not None:
                self.state.mark(ref)


@contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """A Ctrl-C during the block is raised at its end: a file taken into the run is also in
    the state file and out of ``in_flight``, never counted twice or loaded without its line.
    (Signals reach the main thread only: elsewhere the block runs as it is.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


def _stop(collector: _Collector, breaker: CircuitBreaker) -> None:
    """The cluster is down: the groups not started are dropped, those not yet running cancelled."""
    log.error("stopping: the cluster is down", extra={"cause": breaker.cause})
    for future in collector.in_flight:
        future.cancel()


def run_parallel(processor: Processor, objects: Iterable[ObjectRef], workers: int,
                 deadline_for: Callable[[], float], state: StateFile | None = None,
                 progress: Progress | None = None,
                 breaker: CircuitBreaker | None = None) -> tuple[RunResult, bool]:
    """Load the files with ``workers`` threads; returns the run and whether it was interrupted.

    Ctrl-C stops taking new files, lets the ones in flight finish (their state is written)
    and returns with interrupted = True. A second Ctrl-C stops the wait: the files finished
    by then are still taken into the run and the state (each is appended as it is taken).
    An open ``breaker`` (the cluster down too long) stops taking new files too: the groups
    not started are dropped (neither loaded nor failed), those in flight end quickly, failing
    with ClusterDown; ``breaker.is_open`` tells.
    """
    run = RunResult()
    collector = _Collector(run, state, progress)
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load")
    try:
        for group in groups(objects, run.skipped):
            while len(collector.in_flight) >= 2 * workers and not (breaker and breaker.is_open):
                collector.wait()
            if breaker and breaker.is_open:
                _stop(collector, breaker)
                break
            collector.in_flight[pool.submit(_load_group, processor, group, deadline_for)] = group
        while collector.in_flight:
            collector.wait()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finishing the files in flight, then stopping")
        for future in collector.in_flight:
            future.cancel()
        try:
            collector.wait(ALL_COMPLETED)
        except KeyboardInterrupt:
            collector.collect_finished()
            log.warning("interrupted again: not waiting for the files still in flight",
                        extra={"groups_abandoned": len(collector.in_flight)})
    finally:
        pool.shutdown(wait=not interrupted or not collector.in_flight, cancel_futures=True)
    return run, interrupted


def _load_group(processor: Processor, group: list[ObjectRef],
                deadline_for: Callable[[], float]) -> list[Any]:
    """A worker's group of files; its retry deadline counts from now, when the work starts,
    not from when the group was queued behind the others."""
    return processor.process_files(group, deadline_for())


def export_file(source: Any, ref: ObjectRef, out_dir: Path, index_prefix: str,
                shards: int = 1, replicas: int = 1, *,
                max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                exclude: EventFilter | None = None) -> tuple[str, int]:
    """Write the ``_bulk`` NDJSON a load of the file would send (and its index's body) instead
    of sending it: the same documents under the same ids, made by the load's own code
    (``Pipeline.documents``: a different event under an id already taken gets the derived id).

    The NDJSON is written beside its place and renamed there once whole; a file that cannot
    be read through raises FileFailed and leaves no NDJSON. Returns (path, events read).
    """
    index = keys.index_name_for(ref.key, index_prefix)
    data = source.read(ref.bucket, ref.key)
    out_dir.mkdir(parents=True, exist_ok=True)
    body_path = out_dir / f"{index}.index.json"
    if not body_path.exists():
        body_path.write_text(json.dumps(index_body(shards=shards, replicas=replicas), indent=1))
    stem = ref.key.rsplit("/", 1)[-1].removesuffix(".gz").removesuffix(".json")
    target = out_dir / index / f"{stem}.ndjson"
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    file = FileLoad.of(ref, index)
    pipeline = Pipeline(None, Engine("opensearch"), max_event_bytes)
    try:
        with partial.open("wb") as out:
            for item in pipeline.documents([file], lambda _, __: iter_events(
                    data, max_event_bytes=max_event_bytes, max_file_bytes=max_file_bytes), exclude):
                out.write(item.lines)
        if file.failure is not None:
            raise file.failure
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
        file.dead.close()
    if file.dead:  # a load dead-letters them: nothing to send
        log.warning("events too large, not exported", extra={
            "key": ref.key, "count": len(file.dead), "event_ids": [r["doc_id"] for r in file.dead.first]})
    return str(target), file.result.events_read


def notification_for(ref: ObjectRef) -> str:
    """An S3-notification-shaped message for one file, as S3 itself would send it."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": ref.bucket, "arn": f"arn:aws:s3:::{ref.bucket}"},
               "object": {"key": quote_plus(ref.key, safe="/"), "size": ref.size}},
    }]})


#: SendMessageBatch takes up to this many messages.
SQS_BATCH = 10
#: How long ``enqueue`` keeps retrying the entries SQS failed (throttling, service errors).
ENQUEUE_RETRY_SECONDS = 20.0


def enqueue(sqs_client: Any, queue_url: str, objects: Iterable[ObjectRef],
            backoff: Backoff | None = None) -> dict[str, Any]:
    """Send one message per file with SendMessageBatch; retry the entries SQS failed on its side."""
    backoff = backoff or Backoff(base=0.2, cap=5.0)
    summary: dict[str, Any] = {"files_enqueued": 0, "batches": 0, "failed": []}
    log_files = [ref for ref in objects if keys.is_log_file_key(ref.key)]
    for start in range(0, len(log_files), SQS_BATCH):
        _send_batch(sqs_client, queue_url, log_files[start:start + SQS_BATCH], summary, backoff)
    return summary


def _send_batch(sqs_client: Any, queue_url: str, refs: list[ObjectRef], summary: dict[str, Any],
                backoff: Backoff) -> None:
    entries = {str(n): ref for n, ref in enumerate(refs)}

    def attempt(_: int) -> None | Retry:
        nonlocal entries
        answer = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": n, "MessageBody": notification_for(ref)} for n, ref in entries.items()])
        summary["batches"] += 1
        summary["files_enqueued"] += len(answer.get("Successful", []))
        failed = answer.get("Failed", [])
        # A sender fault (a message SQS will never take) is final; the others may pass later.
        summary["failed"] += [entries[f["Id"]].key for f in failed if f.get("SenderFault")]
        entries = {f["Id"]: entries[f["Id"]] for f in failed if not f.get("SenderFault")}
        return Retry(f"{len(entries)} entries failed", f"{len(entries)} SQS messages") if entries else None

    try:
        retrying(attempt, backoff, backoff.clock() + ENQUEUE_RETRY_SECONDS, "SQS messages")
    except RetryDeadlineExceeded:
        summary["failed"] += [ref.key for ref in entries.values()]
