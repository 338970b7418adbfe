"""An export (``--output``) holds the documents and ids a load writes: loaded, the two agree.

Hypothesis makes hostile files (ids shared by different events, redeliveries, odd keys and
values); each is loaded directly, its documents kept and its indexes deleted; then exported
with the same settings, the export posted to the real OpenSearch as the README says
(``_bulk``), and the two compared.
"""
import json
import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

import fakes
from cloudtrail_es.backfill import cli

pytestmark = pytest.mark.integration

DIR = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
NAME = "111122223333_CloudTrail_eu-west-1_20240115T0910Z_Export{n:07d}.json.gz"

hostile_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
hostile_key = st.one_of(hostile_text, st.sampled_from(["a.b", "", ".", "_id", "é", "x" * 40]))
leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), hostile_text,
                 st.floats(allow_nan=False, allow_infinity=False))
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(hostile_key, inner, max_size=3), max_leaves=8)


@st.composite
def events(draw):
    """Events of one file: ids drawn from a small pool (shared by different events), some
    events delivered twice, odd request parameters."""
    made = []
    for n in range(draw(st.integers(1, 12))):
        event = {
            "eventVersion": "1.08",
            "eventID": draw(st.sampled_from(["shared-1", "shared-2", f"own-{n}", "é~ü"])),
            "eventTime": f"2024-01-15T09:{n % 60:02d}:00Z",
            "eventSource": "ec2.amazonaws.com",
            "eventName": draw(st.sampled_from(["RunInstances", "Describe*", "Ünïcode"])),
            "awsRegion": "eu-west-1",
            "requestParameters": draw(st.dictionaries(hostile_key, value, max_size=4)),
        }
        made.append(event)
        if draw(st.booleans()) and draw(st.booleans()):
            made.append(json.loads(json.dumps(event)))  # a redelivery: the same event again
    return made


def documents(opensearch_url, prefix):
    """(index without its prefix, _id) -> _source, for every document under the prefix."""
    requests.post(f"{opensearch_url}/{prefix}-*/_refresh", timeout=60).raise_for_status()
    hits = requests.post(f"{opensearch_url}/{prefix}-*/_search", timeout=60, json={
        "size": 1000, "query": {"match_all": {}}}).json()["hits"]["hits"]
    return {(hit["_index"].removeprefix(prefix), hit["_id"]): hit["_source"] for hit in hits}


def post_export(opensearch_url, out_dir):
    """The export loaded as the README says: each index made from its body, each NDJSON posted."""
    for body in out_dir.glob("*.index.json"):
        index = body.name.removesuffix(".index.json")
        requests.put(f"{opensearch_url}/{index}", data=body.read_bytes(), timeout=60,
                     headers={"Content-Type": "application/json"}).raise_for_status()
    for ndjson in out_dir.rglob("*.ndjson"):
        answer = requests.post(f"{opensearch_url}/_bulk", data=ndjson.read_bytes(), timeout=60,
                               headers={"Content-Type": "application/x-ndjson"})
        answer.raise_for_status()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file_events=events())
def test_an_export_loads_into_what_a_direct_load_writes(
        loader_env, opensearch_url, tmp_path_factory, monkeypatch, capsys, file_events):
    root = tmp_path_factory.mktemp("logs")
    (root / DIR).mkdir(parents=True)
    (root / DIR / NAME.format(n=1)).write_bytes(fakes.trail_file(file_events))
    prefix = f"{loader_env}-{uuid.uuid4().hex[:6]}"  # the same settings for both, as a user has
    monkeypatch.setenv("INDEX_PREFIX", prefix)
    try:
        loaded = cli.main(["--dir", str(root), "--json", "--dead-letter-dir", str(root / "dead")])
        load_summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert loaded == cli.EXIT_OK, load_summary
        direct_docs = documents(opensearch_url, prefix)
        requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60).raise_for_status()

        out_dir = root / "export"
        assert cli.main(["--dir", str(root), "--output", str(out_dir), "--json"]) == cli.EXIT_OK
        capsys.readouterr()
        post_export(opensearch_url, out_dir)
        exported_docs = documents(opensearch_url, prefix)

        lines = [json.loads(line) for f in out_dir.rglob("*.ndjson")
                 for line in f.read_text(encoding="utf-8").split("\n") if line]  # not at U+2028
        export_ids = [line["index"]["_id"] for line in lines[::2]]
        # Every event was written, under the same id, by both: none lost to a shared id.
        assert sorted({i for _, i in direct_docs}) == sorted(set(export_ids))
        assert load_summary["indexed"] + load_summary["degraded"] == len(export_ids)
        # What the cluster took as it is, it took the same from both (a degraded one differs:
        # the load sent the degraded form, the export holds the full one, as a load sends first).
        for key, source in direct_docs.items():
            if "degraded_reason" not in source:  # event.ingested: when each was built
                assert without_ingested(exported_docs[key]) == without_ingested(source)
    finally:
        requests.delete(f"{opensearch_url}/{prefix}-*", timeout=60)


def without_ingested(source: dict) -> dict:
    """The document without ``event.ingested``, the time it was built (the export's or the load's)."""
    event = {k: v for k, v in source.get("event", {}).items() if k != "ingested"}
    return {**source, "event": event}
