"""No event is rejected for its shape: adversarial events against the real cluster."""
import copy
import gzip
import json
import time
from pathlib import Path

import requests
from support import moto_source, refresh, search

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.processor import create_processor

EVENTS = Path(__file__).resolve().parents[1] / "events"
KEY = "AWSLogs/111122223333/CloudTrail/us-east-1/2024/02/01/111122223333_CloudTrail_us-east-1_20240201T0000Z_Adversarial00001.json.gz"
BIG = "x" * 40_000  # over Lucene's 32,766-byte term limit
BIG_UTF8 = "é" * 20_000


def nested(depth, leaf):
    value = leaf
    for level in range(depth, 0, -1):
        value = {f"level{level}": value}
    return value


def adversarial_events():
    base = json.loads((EVENTS / "transform" / "run_instances.input.json").read_text())
    shapes = [
        # the same path as a number, a string, a boolean and an object
        {"requestParameters": {"maxItems": 100}},
        {"requestParameters": {"maxItems": "100"}},
        {"requestParameters": {"maxItems": True}},
        {"requestParameters": {"maxItems": {"value": 100}}},
        {"requestParameters": {"maxItems": [1, "a", {"b": None}]}},
        # date-like then a word, at the top and inside
        {"apiVersion": "2015-12-01", "requestParameters": {"startTime": "2024-01-01T00:00:00Z"}},
        {"apiVersion": "2016_01_28", "requestParameters": {"startTime": "yesterday"}},
        {"apiVersion": "55606", "requestParameters": {"startTime": 1706745600000}},
        # keys with dots, empty and blank keys, a dotted key then an object at its prefix
        {"requestParameters": {"indices.fielddata.cache.size": "40%", "": 1, " ": 2}},
        {"requestParameters": {"indices": "plain", "indices.fielddata": {"x": 1}}},
        # numbers beyond a long, and floats
        {"requestParameters": {"huge": 123456789012345678901234567890, "ratio": 70.5},
         "responseElements": {"huge": -99999999999999999999999}},
        # deeper than the engine's depth limit (20) and wider than its field limit (1000)
        {"requestParameters": nested(40, "deep"), "responseElements": nested(25, {"a": 1})},
        {"requestParameters": {f"field{i}": i for i in range(1500)}},
        {"additionalEventData": {f"extra{i}": {"v": i} for i in range(1200)}},
        # strings over the term limit, everywhere a keyword may sit
        {"userAgent": BIG, "errorMessage": BIG, "errorCode": BIG_UTF8,
         "requestParameters": {"policy": BIG}, "newTopLevel": BIG,
         "userIdentity": {"type": "IAMUser", "arn": BIG_UTF8}},
        # scalars where objects are usual and the reverse
        {"userIdentity": "a string identity", "resources": "not a list",
         "serviceEventDetails": 5, "tlsDetails": ["TLSv1.2"]},
        {"eventName": {"odd": "object"}, "readOnly": "yes", "managementEvent": 1,
         "responseElements": {"role": "string"}},
        {"responseElements": {"role": {"arn": "arn:aws:iam::1:role/r"}},
         "eventTime": "not a date", "eventVersion": 1.08},
        # names the engine reserves
        {"_id": "x", "_source": {"a": 1}, "_routing": "r", "requestParameters": {"_id": 1}},
        # missing optional fields, no eventID
        {"eventID": None, "recipientAccountId": None, "requestID": None},
    ]
    events = []
    for n, shape in enumerate(shapes):
        event = copy.deepcopy(base)
        event["eventID"] = f"adversarial-{n:02d}"
        event.update(shape)
        event = {k: v for k, v in event.items() if not (k in shape and v is None)}
        events.append(event)
    golden = json.loads((EVENTS / "transform" / "adversarial.input.json").read_text())
    return events + [golden]



def test_every_adversarial_event_is_indexed_and_found(opensearch_url, moto_url, index_prefix):
    events = adversarial_events()
    settings = Settings(es_url=opensearch_url, auth="none", index_prefix=index_prefix,
                        index_replicas=0)
    source, bucket = moto_source(moto_url, {KEY: gzip.compress(json.dumps({"Records": events}).encode())})
    processor = create_processor(settings, source=source)

    result = processor.process_file(bucket, KEY, time.monotonic() + 120)

    assert (result.degraded, result.dead_lettered) == (0, 0)
    assert result.indexed == result.events_read == len(events)
    refresh(opensearch_url, index_prefix)
    index = f"{index_prefix}-2024-02"
    count = requests.get(f"{opensearch_url}/{index}/_count", timeout=30).json()["count"]
    assert count == len(events)
    for event_id in ("adversarial-00", "adversarial-03", "adversarial-13", "adversarial-14"):
        assert search(opensearch_url, index_prefix, {"term": {"eventID": event_id}})
    # Values stay searchable through the flattened leaves and the raw text.
    assert {h["_source"]["eventID"] for h in search(
        opensearch_url, index_prefix, {"term": {"requestParameters_flattened.maxItems": "100"}})
    } == {"adversarial-00", "adversarial-01", "5d0b6c47-2222-4e6b-9a55-000000000002"}
    assert search(opensearch_url, index_prefix,
                  {"term": {"requestParameters_flattened.indices%2Efielddata%2Ecache%2Esize": "40%"}})
    assert search(opensearch_url, index_prefix, {"match": {"requestParameters_raw": "deep"}})
    assert search(opensearch_url, index_prefix, {"term": {"requestParameters_flattened.field1499": "1499"}}) == []
    assert search(opensearch_url, index_prefix, {"match": {"requestParameters_raw": "field1499"}})


def test_the_same_events_break_a_plain_dynamic_mapping(opensearch_url, index_prefix):
    """The control: without our transform and mapping, the cluster rejects these events."""
    events = adversarial_events()
    lines = []
    for event in events:
        lines.append(json.dumps({"index": {"_index": f"{index_prefix}-control"}}))
        lines.append(json.dumps({k: v for k, v in event.items() if not k.startswith("_")}))
    response = requests.post(f"{opensearch_url}/_bulk", data="\n".join(lines) + "\n",
                             headers={"Content-Type": "application/x-ndjson"}, timeout=60)
    statuses = [next(iter(item.values()))["status"] for item in response.json()["items"]]
    assert sum(status >= 400 for status in statuses) >= 5
