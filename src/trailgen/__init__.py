"""A generated CloudTrail trail: an organisation's month of activity with a planted intrusion.

``python -m trailgen OUTPUT_DIR [--events N] [--seed S] ...`` writes files laid out and named as
CloudTrail delivers them (``AWSLogs/o-ORG/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/...json.gz``), with
digest files, Insights files, an occasional broken file, and ``manifest.json``: what was written
and every planted event with the starter rule (``rules/``) that must find it.

Deterministic (the same seed and options give the same bytes), no network, standard library only
(it ships beside ``cloudtrail_es`` but is not part of the Lambda), and streaming: memory is bounded
by one delivery window's events, whatever ``--events`` says.
"""
from __future__ import annotations

from trailgen.files import MANIFEST_NAME, TrailOptions, generate, read_manifest

__all__ = ["MANIFEST_NAME", "TrailOptions", "generate", "read_manifest"]
