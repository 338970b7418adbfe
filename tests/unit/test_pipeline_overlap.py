"""A worker builds its next chunk while the one before is in flight, and never more than one ahead."""
import json
import threading
import time

from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.write.bulk import BulkWriter
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.write.pipeline import FileLoad, Pipeline

CHUNK = 5
TOTAL = 4 * CHUNK


class Response:
    status_code = 200

    def __init__(self, count):
        self.content = json.dumps({"items": [{"index": {"status": 201}}] * count}).encode()


class WatchingCluster:
    """Holds each ``_bulk`` request until the chunk after it is built (the chunker has read
    one event past it), or 10 s pass; notes how many events had been read when it answered."""

    def __init__(self, read):
        self.read = read
        self.overlapped = []
        self.read_when_answered = []

    def request(self, method, path, body=None, *, data=None, headers=None):
        sent = len(self.read_when_answered)
        next_chunk_built = min((sent + 2) * CHUNK + 1, TOTAL)
        self.overlapped.append(self.read.reached(next_chunk_built, timeout=10))
        self.read_when_answered.append(self.read.count)
        return Response(data.count(b"\n") // 2)


class Counter:
    def __init__(self):
        self.count = 0
        self.changed = threading.Condition()

    def events(self, total):
        for n in range(total):
            with self.changed:
                self.count += 1
                self.changed.notify_all()
            yield {"eventVersion": "1.08", "eventID": f"e{n}", "eventTime": "2024-01-15T00:00:00Z"}

    def reached(self, count, timeout):
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.count < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True


def test_the_next_chunk_is_built_while_one_is_in_flight_and_no_further():
    read = Counter()
    cluster = WatchingCluster(read)
    pipeline = Pipeline(BulkWriter(cluster, max_docs=CHUNK, compress=False), Engine("opensearch"))
    file = FileLoad.of(ObjectRef("bucket", "key"), "ct-2024-01")

    pipeline.load([file], lambda number, file: read.events(TOTAL), time.monotonic() + 60)

    assert file.failure is None and file.result.indexed == TOTAL
    # Every request was answered only once the next chunk had been built meanwhile...
    assert cluster.overlapped == [True] * 4
    # ... and never after more than one chunk ahead had been read (plus the one event the
    # chunker reads to know a chunk is full).
    for sent, count in enumerate(cluster.read_when_answered):
        assert count <= (sent + 2) * CHUNK + 1
