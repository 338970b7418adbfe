"""The generated trail through the real path: put into moto's S3, loaded by the backfill into
the real OpenSearch, the starter rules run by the detector's own command: every planted event
is found by the rule the manifest names, and nothing else in the trail trips a rule."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import requests
import yaml
from support import refresh, upload

import trailgen
from cloudtrail_es.backfill import cli
from cloudtrail_es.detections import detect

RULES = Path(__file__).resolve().parents[2] / "rules"
#: The only rule the everyday activity may trip (a mistyped password now and then).
NOISE_RULES = {"console_login_failed"}


def rule_ids() -> dict[str, str]:
    """Sigma id -> rule file name, for every starter rule."""
    return {yaml.safe_load(path.read_text())["id"]: path.stem for path in RULES.glob("*.yml")}


def test_the_starter_rules_find_every_planted_event_after_a_backfill_from_s3(
        loader_env, s3, bucket, generated_trail, opensearch_url, capsys):
    manifest = trailgen.read_manifest(generated_trail)
    files = [(str(p.relative_to(generated_trail)), p.read_bytes())
             for p in sorted((generated_trail / "AWSLogs").rglob("*.json.gz"))]
    upload(s3, bucket, files)

    assert cli.main([bucket, "AWSLogs/", "--json", "--quiet"]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files_loaded"] == manifest["files"] == len(files)
    assert summary["events_read"] == summary["indexed"] == manifest["events"]

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = detect.main([str(RULES), "--from", manifest["from"], "--to", manifest["to"], "--json"])
    assert code == detect.EXIT_OK
    names = rule_ids()
    found = {(names[f["rule_id"]], f["eventID"]) for f in map(json.loads, out.getvalue().splitlines())}
    expected = {(f["rule"], f["eventID"]) for f in manifest["expected_findings"]}
    assert expected <= found, sorted(expected - found)
    assert {rule for rule, _ in found - expected} <= NOISE_RULES, sorted(found - expected)

    # The analyst's first search: every call made with the leaked key, the intruder's among them.
    refresh(opensearch_url, loader_env)
    intrusion = manifest["intrusion"]
    hits = requests.post(f"{opensearch_url}/{loader_env}-*/_search", timeout=60, json={
        "size": 100, "_source": False, "query": {"bool": {"filter": [
            {"term": {"userIdentity.accessKeyId": intrusion["leaked_access_key"]}},
            {"term": {"sourceIPAddress": intrusion["source_ip"]}}]}}}).json()["hits"]["hits"]
    leaked = {e["eventID"] for e in intrusion["events"] if e["accessKeyId"] == intrusion["leaked_access_key"]}
    assert leaked and {hit["_id"] for hit in hits} == leaked
