"""New fields declared a chunk at a time map exactly as the dynamic templates map them one
document at a time; writers racing to declare the same fields are harmless."""
import gzip
import json
import threading
import time

import pytest
import requests
from faultproxy import FaultProxy
from support import moto_source
from test_mapping import adversarial_events

from cloudtrail_es.core.config import Settings
from cloudtrail_es.documents import transform
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.write.engine import detect
from cloudtrail_es.write.indexes import index_body
from cloudtrail_es.write.processor import create_processor

pytestmark = pytest.mark.integration

KEY = ("AWSLogs/111122223333/CloudTrail/us-east-1/2024/02/01/"
       "111122223333_CloudTrail_us-east-1_20240201T0000Z_Declared{n:05d}.json.gz")
CORPUS_EVENTS = 4000


def corpus_events(corpus_files, limit):
    events = []
    for _, data in corpus_files:
        events.extend(json.loads(gzip.decompress(data))["Records"])
        if len(events) >= limit:
            break
    return events[:limit]


def engine_of(url):
    return detect(create_cluster(Settings(es_url=url, auth="none")))


def mapping_of(opensearch_url, index):
    """The index's mapping (of its one type, on an engine with mapping types)."""
    mappings = requests.get(f"{opensearch_url}/{index}/_mapping", timeout=60).json()[index]["mappings"]
    doc_type = engine_of(opensearch_url).doc_type
    return mappings[doc_type] if doc_type else mappings


def dynamic_control(opensearch_url, index, events):
    """The same documents, one bulk at a time, into an index left to its dynamic templates."""
    engine = engine_of(opensearch_url)
    assert requests.put(f"{opensearch_url}/{index}", json=engine.index_body(index_body(1, 0)),
                        timeout=60).status_code == 200
    target = {"_index": index, **({"_type": engine.doc_type} if engine.doc_type else {})}
    pending = [json.dumps({"index": {**target, "_id": transform.document_id(event)}})
               + "\n" + json.dumps(transform.document_for(event)) for event in events]
    for _ in range(5):  # a busy cluster may fail a dynamic mapping update (5xx): sent again
        failed = []
        for start in range(0, len(pending), 500):
            sent = pending[start:start + 500]
            response = requests.post(f"{opensearch_url}/_bulk", data="\n".join(sent) + "\n",
                                     headers={"Content-Type": "application/x-ndjson"}, timeout=300)
            items = [item["index"] for item in response.json()["items"]]
            failed += [doc for doc, item in zip(sent, items) if item["status"] >= 300]
            refused = [item for item in items if 300 <= item["status"] < 500]
            assert not refused, [item.get("error") for item in refused[:3]]
        pending = failed
        if not pending:
            break
    assert not pending
    return mapping_of(opensearch_url, index)


def processor(url, index_prefix, **settings):
    return create_processor(Settings(es_url=url, auth="none", index_prefix=index_prefix,
                                     index_replicas=0, **settings), s3_client=object())


def test_declared_fields_map_as_the_dynamic_templates_would(
        opensearch_url, moto_url, index_prefix, corpus_files):
    events = adversarial_events() + corpus_events(corpus_files, CORPUS_EVENTS)
    files = {KEY.format(n=n): gzip.compress(json.dumps({"Records": events[n::4]}).encode())
             for n in range(4)}
    with FaultProxy(opensearch_url) as proxy:
        loader = processor(proxy.url, index_prefix, bulk_max_docs=500)
        loader.source, bucket = moto_source(moto_url, files)
        results = [loader.process_file(bucket, key, time.monotonic() + 300) for key in files]
        updates = [r for r in proxy.requests if r.method == "PUT" and r.path.endswith("/_mapping")]
        bulks = [r for r in proxy.requests if r.path.startswith("/_bulk")]

    assert sum(r.indexed for r in results) == len(events)
    assert sum(r.degraded + r.dead_lettered for r in results) == 0
    # At most one update per chunk after the first, whose fields rode in the creation body.
    assert len(updates) <= len(bulks) - 1
    declared = mapping_of(opensearch_url, f"{index_prefix}-2024-02")
    control = dynamic_control(opensearch_url, f"{index_prefix}-control", events)
    assert len(control["properties"]) > 50
    assert declared == control


def test_writers_racing_to_declare_the_same_fields_all_land(opensearch_url, moto_url, index_prefix):
    """Four processes' worth of writers (each its own record of what is mapped) bring the same
    new fields to a new index at once."""
    shared = {f"leaf{n}": str(n) for n in range(300)}
    events = [{"eventVersion": "1.08", "eventTime": "2024-02-01T00:00:00Z", "eventName": "Race",
               "eventID": f"race-{w}-{n}", "requestParameters": {**shared, f"own{w}": str(n)},
               "newTopLevel": "value", "additionalEventData": {"shared": 1}}
              for w in range(4) for n in range(50)]
    loaders, buckets = [], []
    for w in range(4):
        loader = processor(opensearch_url, index_prefix)
        loader.source, bucket = moto_source(moto_url, {KEY.format(n=w): gzip.compress(json.dumps(
            {"Records": [e for e in events if e["eventID"].startswith(f"race-{w}-")]}).encode())})
        loaders.append(loader)
        buckets.append(bucket)
    start = threading.Barrier(4)
    results = [None] * 4

    def load(w):
        start.wait()
        results[w] = loaders[w].process_file(buckets[w], KEY.format(n=w), time.monotonic() + 120)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [(r.indexed, r.degraded, r.dead_lettered) for r in results] == [(50, 0, 0)] * 4
    declared = mapping_of(opensearch_url, f"{index_prefix}-2024-02")
    assert declared == dynamic_control(opensearch_url, f"{index_prefix}-control", events)
