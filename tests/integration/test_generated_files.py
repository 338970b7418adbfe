"""Generated hostile CloudTrail files through the backfill CLI into the real OpenSearch.

Every event read is found: read = indexed + degraded + dead-lettered, checked against the
documents the cluster holds and the dead-letter records written. Some files carry events
longer than ``MAX_EVENT_BYTES``, which the loader dead-letters without sending, so the
dead-letter half of the accounting is exercised too.
"""
import gzip
import json
import tempfile
import uuid
from pathlib import Path

import hypothesis
import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from cloudtrail_es.backfill import cli
from cloudtrail_es.write import deadletter
from cloudtrail_es.core import deepjson
from cloudtrail_es.documents import transform
from cloudtrail_strategies import deep, events

pytestmark = pytest.mark.integration

#: Unique ids (duplicates within a file are another issue's case): a UUID, sometimes padded
#: past the 512 bytes an _id may have, so it is replaced by a digest.
unique_ids = st.builds(lambda pad: str(uuid.uuid4()) + pad, st.sampled_from(["", "é" * 300]))


def file_key(n: int) -> str:
    return (f"AWSLogs/123456789012/CloudTrail/us-east-1/2024/01/15/123456789012_CloudTrail_"
            f"us-east-1_20240115T{n:04d}Z_{uuid.uuid4().hex[:16]}.json.gz")


#: Events longer than this (JSON text) are dead-lettered by the loader itself; generated events
#: stay well below it, the oversized ones well above.
EVENT_LIMIT = 64 * 1024


def oversized_event(n: int) -> dict:
    return {"eventID": f"oversized-{uuid.uuid4().hex}-{n}", "eventName": "PutBucketPolicy",
            "requestParameters": {"policy": "x" * (EVENT_LIMIT + 1000 * n)}}


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.lists(st.lists(st.tuples(events, unique_ids), max_size=5), min_size=1, max_size=3),
       deep_one=st.booleans(), ascii_only=st.booleans(), oversized=st.integers(0, 2))
def test_generated_files_are_accounted_for_in_the_index(loader_env, opensearch_url, monkeypatch, files,
                                                        deep_one, ascii_only, oversized, capsys):
    prefix = loader_env
    monkeypatch.setenv("MAX_EVENT_BYTES", str(EVENT_LIMIT))
    hypothesis.event(f"{oversized} oversized events")
    requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60)
    root = Path(tempfile.mkdtemp(prefix="generated-"))
    dead_letters = root / "dead-letter"
    ids = []
    for n, records in enumerate(files):
        events_of_file = [{**event, "eventID": event_id} for event, event_id in records]
        if deep_one and n == 0:
            events_of_file.append({"eventID": str(uuid.uuid4()), "requestParameters": deep(3000)})
        if n == len(files) - 1:
            events_of_file += [oversized_event(k) for k in range(oversized)]
        ids += [transform.document_id(event) for event in events_of_file]
        texts = []
        for event in events_of_file:
            try:
                text = json.dumps(event, ensure_ascii=ascii_only)
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: only its escape has a UTF-8 form
                text = json.dumps(event)
            except RecursionError:
                text = deepjson.dumps(event)
            texts.append(text)
        text = '{"Records":[' + ",".join(texts) + "]}"
        path = root / "logs" / file_key(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    capsys.readouterr()

    exit_code = cli.main(["--dir", str(root / "logs"), "--json", "--quiet",
                          "--dead-letter-dir", str(dead_letters)])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files_failed"] == 0
    assert exit_code == (cli.EXIT_DEAD_LETTERED if summary["dead_lettered"] else cli.EXIT_OK)
    assert summary["events_read"] == len(ids)
    written = sorted(dead_letters.rglob("*")) if dead_letters.exists() else []
    records = [r for p in written if p.name.endswith(".ndjson.gz") for r in deadletter.decode(p.read_bytes())]
    assert summary["dead_lettered"] == len(records) >= oversized
    assert {r["doc_id"] for r in records} >= {i for i in ids if i.startswith("oversized-")}
    requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60)
    found = requests.get(f"{opensearch_url}/{prefix}-*/_count", timeout=60).json().get("count", 0)
    assert summary["indexed"] + summary["degraded"] == found
    assert summary["indexed"] + summary["degraded"] + summary["dead_lettered"] == len(ids)
    if ids:
        answer = requests.post(f"{opensearch_url}/{prefix}-2024-01/_mget", json={"ids": ids},
                               timeout=60).json()
        assert sum(doc.get("found", False) for doc in answer["docs"]) == found

