"""16 writers starting at once on indexes that do not exist yet."""
import gzip
import json
import threading
import time

import pytest
import requests
from support import refresh, upload

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.indexes import TOTAL_FIELDS_LIMIT, mapping
from cloudtrail_es.write.processor import create_processor

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only

WRITERS = 16



def test_sixteen_concurrent_writers_create_each_index_once_with_our_mapping(
        opensearch_url, index_prefix, corpus_files, s3, bucket):
    # Files of the same few months, so that every writer races for the same indexes.
    by_month = {}
    for key, data in corpus_files:
        by_month.setdefault(key.rsplit("_", 2)[-2][:6], []).append((key, data))
    months = sorted(by_month, key=lambda m: -len(by_month[m]))[:2]
    files = [f for m in months for f in by_month[m]]
    upload(s3, bucket, files)
    settings = Settings(es_url=opensearch_url, auth="none", index_prefix=index_prefix,
                        index_replicas=0)
    start = threading.Barrier(WRITERS)
    outcomes = [None] * WRITERS

    def writer(n):
        processor = create_processor(settings, s3_client=s3)
        start.wait()
        try:
            outcomes[n] = [processor.process_file(bucket, key, time.monotonic() + 120)
                           for key, _ in files[n::WRITERS] + files[:1] + files[-1:]]
        except Exception as exc:  # recorded and asserted on below
            outcomes[n] = exc

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    errors = [o for o in outcomes if not isinstance(o, list)]
    assert not errors, errors
    results = [r for o in outcomes for r in o]
    assert all(r.indexed == r.events_read and not r.degraded and not r.dead_lettered
               for r in results)

    indexes = requests.get(f"{opensearch_url}/{index_prefix}-*", timeout=30).json()
    assert sorted(indexes) == sorted(f"{index_prefix}-{m[:4]}-{m[4:]}" for m in months)
    for body in indexes.values():
        assert body["settings"]["index"]["mapping"]["total_fields"]["limit"] == str(TOTAL_FIELDS_LIMIT)
        assert body["mappings"]["properties"]["eventTime"]["type"] == "date"
        assert body["mappings"]["date_detection"] is False
        assert [next(iter(t)) for t in body["mappings"]["dynamic_templates"]] == [
            next(iter(t)) for t in mapping()["dynamic_templates"]]
    refresh(opensearch_url, index_prefix)
    count = requests.get(f"{opensearch_url}/{index_prefix}-*/_count", timeout=30).json()["count"]
    assert count == sum(len(json.loads(gzip.decompress(d))["Records"]) for _, d in files)
