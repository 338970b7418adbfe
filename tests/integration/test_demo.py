"""``scripts/demo.py`` as a newcomer runs it: its output names every planted finding, shows the
analyst's searches, and ends saying how to load your own trail and stop the services."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import requests
import yaml

import trailgen

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_shows_every_planted_finding(opensearch_url, aws_env, index_prefix):
    moto_url = aws_env
    bucket = f"demo-{index_prefix}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "OPENSEARCH_PORT": str(urlsplit(opensearch_url).port),
           "MOTO_PORT": str(urlsplit(moto_url).port)}
    try:
        done = subprocess.run([sys.executable, "scripts/demo.py", "--prefix", index_prefix,
                               "--bucket", bucket], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=1800)
    finally:  # the prefix's indexes go with the index_prefix fixture; the rest here
        requests.delete(f"{opensearch_url}/{index_prefix}_findings*", timeout=60)
        leftover = boto3.resource("s3").Bucket(bucket)
        if leftover.creation_date:
            leftover.objects.all().delete()
            leftover.delete()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert out[0].startswith("1/4 generating a trail")
    manifest = trailgen.read_manifest(ROOT / "build" / "demo-trail")
    titles = {path.stem: yaml.safe_load(path.read_text())["title"] for path in (ROOT / "rules").glob("*.yml")}
    planted = {e["eventID"]: e for e in manifest["intrusion"]["events"]}
    for finding in manifest["expected_findings"]:
        event = planted[finding["eventID"]]
        row = [line for line in out if line.strip().startswith(event["eventTime"])
               and titles[finding["rule"]][:38] in line and line.rstrip().endswith(event["eventName"])]
        assert len(row) == 1, (finding, event)
    intruder = manifest["intrusion"]["source_ip"]
    assert any(intruder in line and "first seen" in line for line in out)
    assert any(line.strip().endswith(manifest["intrusion"]["new_user"]) and intruder in line for line in out)
    assert "Load your own trail" in done.stdout and out[-1] == "Stop the services: make -f Makefile.pip services-stop"
