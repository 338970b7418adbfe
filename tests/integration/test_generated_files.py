"""Generated hostile CloudTrail files through the backfill CLI into the real OpenSearch.

Every event read is found: read = indexed + degraded + dead-lettered, checked against the
documents the cluster holds and the dead-letter records written.
"""
import gzip
import json
import tempfile
import uuid
from pathlib import Path

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


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.lists(st.lists(st.tuples(events, unique_ids), max_size=5), min_size=1, max_size=3),
       deep_one=st.booleans(), ascii_only=st.booleans())
def test_generated_files_are_accounted_for_in_the_index(loader_env, opensearch_url, files, deep_one,
                                                        ascii_only, capsys):
    prefix = loader_env
    requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60)
    root = Path(tempfile.mkdtemp(prefix="generated-"))
    dead_letters = root / "dead-letter"
    ids = []
    for n, records in enumerate(files):
        events_of_file = [{**event, "eventID": event_id} for event, event_id in records]
        if deep_one and n == 0:
            events_of_file.append({"eventID": str(uuid.uuid4()), "requestParameters": deep(3000)})
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
    assert exit_code in (cli.EXIT_OK, cli.EXIT_FILES_FAILED) and summary["files_failed"] == 0
    assert summary["events_read"] == len(ids)
    written = sorted(dead_letters.rglob("*")) if dead_letters.exists() else []
    dead = sum(len(deadletter.decode(p.read_bytes())) for p in written if p.name.endswith(".ndjson.gz"))
    assert summary["dead_lettered"] == dead
    requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60)
    found = requests.get(f"{opensearch_url}/{prefix}-*/_count", timeout=60).json().get("count", 0)
    assert summary["indexed"] + summary["degraded"] == found
    assert summary["indexed"] + summary["degraded"] + summary["dead_lettered"] == len(ids)
    if ids:
        answer = requests.post(f"{opensearch_url}/{prefix}-2024-01/_mget", json={"ids": ids},
                               timeout=60).json()
        assert sum(doc.get("found", False) for doc in answer["docs"]) == found

