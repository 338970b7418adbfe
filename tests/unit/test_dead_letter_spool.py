"""Dead letters spooled out as they are decided: a file's memory does not follow its rejections."""
import gzip
import json
import tracemalloc

from hypothesis import given, settings as hsettings, strategies as st

import fakes
from cloudtrail_es.write import deadletter
from cloudtrail_es.write.deadletter import Spool


def rejected(n: int) -> dict:
    return deadletter.record(reason="mapper_parsing_exception", status=400, error={"type": "x"},
                             bucket="b", key="k", index="ct-2024-01", doc_id=f"id-{n}",
                             event=fakes.event(f"id-{n}", padding="p" * 2000))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


@hsettings(max_examples=50, deadline=None)
@given(events=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=30))
def test_a_spool_gives_back_the_records_it_took_as_the_stored_file_holds_them(events):
    records = [deadletter.record(reason="r", status=400, error=None, bucket="b", key="k",
                                 index="i", doc_id=str(n), event=e) for n, e in enumerate(events)]
    spool = Spool(keep=3)
    for entry in records:
        spool.append(entry)
    assert len(spool) == len(records) and spool.first == records[:3]
    assert list(spool) == deadletter.decode(deadletter.encode(records))
    assert deadletter.decode(spool.gzipped().read()) == list(spool)


def test_a_spool_holds_a_bounded_memory_however_many_records():
    tracemalloc.start()
    try:
        spool = Spool()
        for n in range(5000):  # about 10 MB of JSON
            spool.append(rejected(n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * deadletter.SPOOL_MEMORY_BYTES
    assert len(spool) == 5000 and len(spool.first) == 10
    assert sum(1 for _ in spool) == 5000
    spool.close()


def test_a_file_with_thousands_of_rejections_is_dead_lettered_whole_from_the_spool(tmp_path):
    events = [fakes.event(f"e{n}", padding="p" * 500) for n in range(1500)]
    source = fakes.MemorySource({fakes.log_key("SpoolFile000001"): fakes.trail_file(events)})
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, source: 400)
    store = deadletter.LocalDeadLetters(tmp_path)
    processor = fakes.processor_for(source, cluster, store)

    result = processor.process_file("b", fakes.log_key("SpoolFile000001"), 1e12)

    assert (result.events_read, result.indexed, result.dead_lettered) == (1500, 0, 1500)
    [stored] = tmp_path.rglob("*.ndjson.gz")
    records = [json.loads(line) for line in gzip.decompress(stored.read_bytes()).splitlines()]
    assert [r["doc_id"] for r in records] == [f"e{n}" for n in range(1500)]
    assert records[1234]["event"] == events[1234]
