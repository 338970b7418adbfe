"""The trail generator: the same seed gives the same bytes, the files are CloudTrail's, the
planted events are in the trail as the manifest says, and memory stays flat as the trail grows."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import zlib
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

import trailgen
from cloudtrail_es.read.keys import index_name_for, parse_log_file_key

ROOT = Path(__file__).resolve().parents[2]
SMALL = trailgen.TrailOptions(events=3000, start=date(2025, 1, 27), days=8, broken_every=100)
KEY = re.compile(r"AWSLogs/o-[a-z0-9]{10}/(?P<account>\d{12})/(?P<kind>CloudTrail|CloudTrail-Insight|"
                 r"CloudTrail-Digest)/(?P<region>[a-z0-9-]+)/(?P<day>\d{4}/\d{2}/\d{2})/(?P=account)_"
                 r"(?P=kind)_(?P=region)_.*\.json\.gz")
#: What the starter rules must find of the intrusion (issue: the planted attack).
PLANTED_RULES = {"iam_user_created", "iam_access_key_created", "iam_admin_policy_attached",
                 "console_login_without_mfa", "ec2_security_group_open_to_world",
                 "ec2_snapshot_or_image_made_public", "cloudtrail_logging_stopped"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("trail")
    return root, trailgen.generate(root, SMALL)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "AWSLogs").rglob("*"))
            if p.is_file()}


def log_events(files: dict[str, bytes], broken: set[str]) -> list[dict]:
    return [event for key, data in files.items()
            if key not in broken and parse_log_file_key(key)
            for event in json.loads(gzip.decompress(data))["Records"]]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_trail(small, tmp_path):
    root, manifest = small
    again = trailgen.generate(tmp_path / "again", SMALL)
    assert again == manifest
    assert files_of(tmp_path / "again") == files_of(root)
    other = trailgen.generate(tmp_path / "other", trailgen.TrailOptions(**{**SMALL.__dict__, "seed": 2}))
    assert other["intrusion"]["leaked_access_key"] != manifest["intrusion"]["leaked_access_key"]
    assert not set(files_of(tmp_path / "other")) & set(files_of(root))


def test_files_are_laid_out_and_named_as_cloudtrail_delivers_them(small):
    root, manifest = small
    files = files_of(root)
    broken = {b["key"] for b in manifest["broken_files"]}
    kinds = Counter()
    for key, data in files.items():
        match = KEY.fullmatch(key)
        assert match, key
        kinds[match["kind"]] += 1
        if match["kind"] == "CloudTrail-Digest":
            assert parse_log_file_key(key) is None
            continue
        name = parse_log_file_key(key)
        assert name and f"{name.day:%Y/%m/%d}" == match["day"] and name.account == match["account"]
        if key in broken:
            continue
        for event in json.loads(gzip.decompress(data))["Records"]:
            assert (event["recipientAccountId"], event["awsRegion"]) == (name.account, name.region)
    assert kinds["CloudTrail"] == manifest["files"] - manifest["insights_files"] + len(broken)
    assert kinds["CloudTrail-Insight"] == manifest["insights_files"] >= 1
    assert kinds["CloudTrail-Digest"] == manifest["digest_files"] > 0
    events = log_events(files, broken)
    assert len(events) == manifest["events"] == SMALL.events
    assert len({e["eventID"] for e in events}) == len(events)
    months = Counter(index_name_for(k, "")[1:] for k, d in files.items()
                     if k not in broken and parse_log_file_key(k)
                     for _ in json.loads(gzip.decompress(d))["Records"])
    assert dict(months) == manifest["events_by_month"] and len(months) == 2


def test_events_have_the_shapes_of_a_real_trail(small):
    root, manifest = small
    events = log_events(files_of(root), {b["key"] for b in manifest["broken_files"]})
    sources = {e.get("eventSource") for e in events}
    assert {"ec2.amazonaws.com", "s3.amazonaws.com", "iam.amazonaws.com", "sts.amazonaws.com",
            "kms.amazonaws.com", "lambda.amazonaws.com", "cloudtrail.amazonaws.com",
            "signin.amazonaws.com", "sso.amazonaws.com"} <= sources
    identities = Counter(e.get("userIdentity", {}).get("type") for e in events)
    assert {"AssumedRole", "IAMUser", "AWSService", "Unknown"} <= set(identities)
    assert any("invokedBy" in e.get("userIdentity", {}) for e in events)
    errors = Counter(e["errorCode"] for e in events if "errorCode" in e)
    assert errors["AccessDenied"] and errors["Client.UnauthorizedOperation"]
    assert any(e.get("requestParameters", 0) is None for e in events)
    assert any(e.get("responseElements", 0) is None for e in events)
    assert Counter(e.get("eventType") for e in events).keys() >= {
        "AwsApiCall", "AwsServiceEvent", "AwsCloudTrailInsight"}
    assert any(e.get("eventCategory") == "Data" for e in events)
    assert max(depth(e.get("responseElements")) for e in events) >= 6
    assert len(manifest["accounts"]) == SMALL.accounts
    assert {e["recipientAccountId"] for e in events} == set(manifest["accounts"])
    assert {e["awsRegion"] for e in events} == set(SMALL.regions)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def test_digests_name_the_files_delivered_with_their_hashes(small):
    root, manifest = small
    files = files_of(root)
    listed = set()
    for key, data in files.items():
        if "/CloudTrail-Digest/" in key:
            digest = json.loads(gzip.decompress(data))
            assert digest["digestS3Object"] == key
            for log_file in digest["logFiles"]:
                assert hashlib.sha256(files[log_file["s3Object"]]).hexdigest() == log_file["hashValue"]
                listed.add(log_file["s3Object"])
    broken = {b["key"] for b in manifest["broken_files"]}
    assert listed == {k for k in files if "/CloudTrail/" in k} - broken


def test_broken_files_are_listed_and_do_not_decompress(small):
    root, manifest = small
    files = files_of(root)
    every = SMALL.broken_every
    assert len(manifest["broken_files"]) == (manifest["files"] + every // 2) // every > 1
    for broken in manifest["broken_files"]:
        data = files[broken["key"]]
        assert files[broken["copy_of"]].startswith(data) and parse_log_file_key(broken["key"])
        with pytest.raises((EOFError, zlib.error, gzip.BadGzipFile)):
            gzip.decompress(data)


def test_every_planted_event_is_in_the_trail_as_listed(small):
    root, manifest = small
    events = {e["eventID"]: e for e in log_events(files_of(root), {b["key"] for b in manifest["broken_files"]})}
    intrusion = manifest["intrusion"]
    for entry in intrusion["events"]:
        event = events[entry["eventID"]]
        assert (event["eventName"], event["eventTime"], event["sourceIPAddress"]) == (
            entry["eventName"], entry["eventTime"], intrusion["source_ip"])
    rules = {f["rule"] for f in manifest["expected_findings"]}
    assert PLANTED_RULES <= rules
    assert all((ROOT / "rules" / f"{rule}.yml").is_file() for rule in rules)
    leaked = [e for e in events.values()
              if e.get("userIdentity", {}).get("accessKeyId") == intrusion["leaked_access_key"]]
    assert {e["sourceIPAddress"] for e in leaked} >= {intrusion["source_ip"]}
    # Before the intrusion, the key is used from its usual address only.
    assert all(e["sourceIPAddress"] != intrusion["source_ip"] for e in leaked
               if e["eventTime"] < intrusion["start"])
    assert sum(e.get("sourceIPAddress") == intrusion["source_ip"] for e in events.values()) == len(intrusion["events"])


PEAK = """
import resource, sys
from pathlib import Path
import trailgen
written = [0]
def count(key, data):
    written[0] += len(data)
manifest = trailgen.generate(Path(sys.argv[1]), trailgen.TrailOptions(events=int(sys.argv[2])), sink=count)
print(manifest["events"], written[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(tmp_path: Path, events: int) -> tuple[int, int, int]:
    done = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / str(events)), str(events)],
                          capture_output=True, text=True, timeout=3600,
                          env={"PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    count, written, peak = map(int, done.stdout.split())
    return count, written, peak


def test_memory_stays_flat_from_ten_thousand_to_a_hundred_thousand_events(tmp_path):
    # A million events take minutes: benchmarks/trailgen_memory.py measures those.
    count, small_bytes, small_peak = peak_rss_kib(tmp_path, 10_000)
    assert count == 10_000
    count, large_bytes, large_peak = peak_rss_kib(tmp_path, 100_000)
    print(f"peak RSS: {small_peak // 1024} MiB for 10,000 events, {large_peak // 1024} MiB for "
          f"100,000 ({small_bytes / 1e6:.1f} and {large_bytes / 1e6:.1f} MB of gzip written)")
    # Digest files come by the hour whatever the events: ten times the events, more than
    # four times the bytes (4.5 measured).
    assert count == 100_000 and large_bytes > 4 * small_bytes
    # Ten times the events (~150 MB as JSON; 1 KiB an event kept would be 90 MiB) may only
    # grow the buffers of one delivery window.
    assert large_peak - small_peak < 48 * 1024
