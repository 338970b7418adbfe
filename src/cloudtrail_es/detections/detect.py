"""Run Sigma rules over the loaded events; record and announce what they find.

``python -m cloudtrail_es.detections.detect RULES... [--from TIME] [--to TIME] [--json]``

RULES are Sigma YAML files or directories (converted here, which needs pySigma), or rule
bundles (``.json``, converted by ``scripts/package.py``: the Lambda's runtime has no pySigma).
Without ``--from``/``--to`` the window, by ``eventTime``, runs from where the last such run
ended to ``DETECTION_DELAY_MINUTES`` (15) before now, so events in files that arrive late are
still checked, once; that state is kept in the cluster (``PREFIX_findings_state``).
Findings go to ``PREFIX_findings`` (one document per rule and event: reruns add nothing),
and the new ones to SNS when ``FINDINGS_TOPIC_ARN`` is set.

Exit codes: 0 every rule ran; 1 a rule's search failed, or findings could not all be written
or published; 2 bad usage or settings, no rule, or the cluster unreachable; 3 every rule that
could be converted ran, but some could not (listed with the reason).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from cloudtrail_es.detections import fieldref
from cloudtrail_es.write.cluster import Cluster, create_cluster
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.core.errors import (ClusterError, ConfigurationError, DetectionError, EngineUnsupported)

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RULES_SKIPPED = 3

#: Rules converted at package time, shipped inside the package (see scripts/package.py).
PACKAGED_RULES = Path(__file__).with_name("rules.json")
FINDINGS_SUFFIX = "_findings"
STATE_SUFFIX = "_findings_state"
STATE_ID = "detector"
#: A first run without state looks back this far.
FIRST_RUN_LOOKBACK = timedelta(days=1)
PAGE_SIZE = 1000
SNS_BATCH = 10
#: Event fields copied into a finding.
EVENT_FIELDS = ("eventID", "eventTime", "eventName", "eventSource", "awsRegion",
                "sourceIPAddress", "recipientAccountId", "errorCode")

_FINDING_KEYWORDS = ("rule_id", "rule_title", "level", "tags", "eventID", "index", "eventName",
                     "eventSource", "awsRegion", "sourceIPAddress", "recipientAccountId",
                     "errorCode", "user", "user_type")
FINDINGS_MAPPING = {
    "dynamic": False,
    "properties": {
        **{name: {"type": "keyword"} for name in _FINDING_KEYWORDS},
        "eventTime": {"type": "date", "ignore_malformed": True},
        "detected_at": {"type": "date"},
    },
}
STATE_MAPPING = {"dynamic": False, "properties": {"window_end": {"type": "date"}}}


def findings_index(prefix: str) -> str:
    """Beside the monthly indexes, never matched by ``PREFIX-*`` (searches, retention, Dashboards)."""
    return prefix + FINDINGS_SUFFIX


# -- Rules ------------------------------------------------------------------------------------

@dataclass
class RuleSet:
    rules: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def add_bundle(self, bundle: dict[str, Any]) -> None:
        self.rules.extend(bundle.get("rules", []))
        self.skipped.extend(bundle.get("skipped", []))


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Bundles (``.json``) as they are; Sigma YAML files and directories through pySigma."""
    ruleset = RuleSet()
    yaml_paths: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DetectionError(f"{path}: no such file or directory")
        if path.is_file() and path.suffix == ".json":
            ruleset.add_bundle(_read_bundle(path))
        else:
            yaml_paths.append(path)
    if yaml_paths:
        try:
            from cloudtrail_es.detections import sigma
        except ImportError as exc:
            raise DetectionError(f"converting Sigma YAML needs pySigma ({exc}); install it or "
                                 "give a rule bundle made by scripts/package.py") from None
        ruleset.add_bundle(sigma.convert_paths(yaml_paths).bundle())
    return ruleset


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DetectionError(f"{path}: not a rule bundle ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != 1:
        raise DetectionError(f"{path}: not a rule bundle (expected format 1)")
    return bundle


# -- Queries for the engine at hand ------------------------------------------------------------

def supports_case_insensitive(engine: Engine) -> bool:
    """``case_insensitive`` on term/prefix/wildcard/regexp: OpenSearch 1+, Elasticsearch 7.10+."""
    return engine.distribution != "elasticsearch" or engine.version >= (7, 10)


def _letter_classes(text: str) -> str:
    out = []
    for char in text:
        lower, upper = char.lower(), char.upper()
        if lower != upper and len(lower) == 1 and len(upper) == 1:
            out.append(f"[{lower}{upper}]")
        elif char.isalnum():
            out.append(char)
        else:
            out.append("\\" + char)
    return "".join(out)


def _wildcard_regexp(pattern: str) -> str:
    out, escaped = [], False
    for char in pattern:
        if escaped:
            out.append(_letter_classes(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(_letter_classes(char))
    return "".join(out)


def for_engine(query: Any, engine: Engine) -> Any:
    """The query as ``engine`` takes it: without ``case_insensitive`` where it is unknown
    (Elasticsearch before 7.10), case folded into a regular expression instead."""
    if supports_case_insensitive(engine):
        return query
    if isinstance(query, list):
        return [for_engine(item, engine) for item in query]
    if not isinstance(query, dict):
        return query
    for kind in ("term", "prefix", "wildcard", "regexp"):
        if kind in query and len(query) == 1:
            (name, body), = query[kind].items()
            if not body.get("case_insensitive"):
                return query
            if kind == "regexp":
                raise EngineUnsupported("a case-insensitive regular expression (re|i) needs "
                                        "OpenSearch or Elasticsearch 7.10+")
            value = body["value"]
            regexp = (_letter_classes(value) if kind == "term" else
                      _letter_classes(value) + ".*" if kind == "prefix" else
                      _wildcard_regexp(value))
            return {"regexp": {name: {"value": regexp, "flags": "NONE"}}}
    return {key: for_engine(value, engine) for key, value in query.items()}


# -- The window -------------------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{text!r} is not an ISO 8601 time (2024-03-13T08:30:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    #: Whether the run advances the stored state (the default window does, explicit ones don't).
    from_state: bool = False

    def query(self) -> dict[str, Any]:
        return {"range": {"eventTime": {"gte": iso(self.start), "lt": iso(self.end)}}}


# -- The cluster side -------------------------------------------------------------------------

class Store:
    """The findings index and the detector's state document, over the project's cluster."""

    def __init__(self, cluster: Cluster, engine: Engine, prefix: str) -> None:
        self.cluster = cluster
        self.engine = engine
        self.prefix = prefix
        self.findings = findings_index(prefix)
        self.state = prefix + STATE_SUFFIX
        self._doc_path = f"/{self.state}/{engine.doc_type or '_doc'}/{STATE_ID}"

    def ensure(self, index: str, mapping: dict[str, Any]) -> None:
        body = self.engine.index_body({"settings": {"index": {"number_of_shards": 1}},
                                       "mappings": mapping})
        response = self.cluster.request("PUT", f"/{index}", body)
        if response.status_code != 200 and "already_exists" not in response.text:
            raise ClusterError(f"cannot create {index}", response)

    def window_end(self) -> datetime | None:
        response = self.cluster.request("GET", self._doc_path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ClusterError(f"cannot read the detector state {self.state}", response)
        return parse_time(response.json()["_source"]["window_end"])

    def save_window_end(self, end: datetime) -> None:
        self.ensure(self.state, STATE_MAPPING)
        response = self.cluster.request("PUT", self._doc_path + "?refresh=true",
                                        {"window_end": iso(end)})
        if response.status_code not in (200, 201):
            raise ClusterError(f"cannot save the detector state {self.state}", response)

    def search(self, query: dict[str, Any], window: Window,
               fields: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        """Every event the query matches in the window (a scroll over ``PREFIX-*``); ``fields``
        are brought in ``_source`` besides the finding's own."""
        body = {"size": PAGE_SIZE, "sort": ["_doc"],
                "_source": [*EVENT_FIELDS, "userIdentity.arn", "userIdentity.type", *fields],
                "query": {"bool": {"filter": [window.query(), query]}}}
        response = self.cluster.request(
            "POST", f"/{self.prefix}-*/_search?scroll=2m&ignore_unavailable=true", body)
        scroll_id = None
        try:
            while True:
                if response.status_code != 200:
                    raise ClusterError("search failed", response)
                page = response.json()
                scroll_id = page.get("_scroll_id")
                hits = page["hits"]["hits"]
                if not hits:
                    return
                yield from hits
                response = self.cluster.request("POST", "/_search/scroll",
                                                {"scroll": "2m", "scroll_id": scroll_id})
        finally:
            if scroll_id:
                self.cluster.request("DELETE", "/_search/scroll", {"scroll_id": [scroll_id]})

    def record(self, findings: list[dict[str, Any]]) -> tuple[list[dict], list[str]]:
        """Create each finding once: returns the new ones and the errors (already there: neither)."""
        if not findings:
            return [], []
        self.ensure(self.findings, FINDINGS_MAPPING)
        lines = []
        for finding in findings:
            action: dict[str, Any] = {"_index": self.findings, "_id": finding["finding_id"]}
            if self.engine.doc_type:
                action["_type"] = self.engine.doc_type
            lines.append(json.dumps({"create": action}))
            lines.append(json.dumps({k: v for k, v in finding.items() if k != "new"}))
        response = self.cluster.request(
            "POST", "/_bulk?refresh=true", data=("\n".join(lines) + "\n").encode("utf-8"),
            headers={"Content-Type": "application/x-ndjson"})
        if response.status_code != 200:
            raise ClusterError(f"cannot write findings to {self.findings}", response)
        new, errors = [], []
        for finding, item in zip(findings, response.json()["items"]):
            status = item["create"]["status"]
            if status == 201:
                finding["new"] = True
                new.append(finding)
            elif status != 409:
                errors.append(f"finding {finding['finding_id']}: HTTP {status} "
                              f"{item['create'].get('error')}")
        return new, errors


# -- Findings ---------------------------------------------------------------------------------

def finding_id(rule_id: str, event_doc_id: str) -> str:
    """One finding per rule and event, whatever run finds it."""
    return hashlib.sha256(f"{rule_id}\n{event_doc_id}".encode("utf-8")).hexdigest()


def finding_for(rule: dict[str, Any], hit: dict[str, Any], detected_at: datetime) -> dict[str, Any]:
    source = hit.get("_source", {})
    identity = source.get("userIdentity") or {}
    finding = {
        "finding_id": finding_id(rule["id"], hit["_id"]),
        "rule_id": rule["id"], "rule_title": rule.get("title", ""),
        "level": rule.get("level", ""), "tags": rule.get("tags", []),
        "index": hit["_index"],
        **{name: source[name] for name in EVENT_FIELDS if name in source},
        "user": identity.get("arn"), "user_type": identity.get("type"),
        "detected_at": iso(detected_at), "new": False,
    }
    finding.setdefault("eventID", hit["_id"])
    return finding


def publish(sns: Any, topic_arn: str, findings: list[dict[str, Any]]) -> list[str]:
    """SNS PublishBatch, 10 a call; returns an error per finding not published."""
    errors: list[str] = []
    for start in range(0, len(findings), SNS_BATCH):
        batch = findings[start:start + SNS_BATCH]
        entries = [{
            "Id": str(position),
            "Subject": f"[{f['level'] or 'finding'}] {f['rule_title']}"[:100],
            "Message": json.dumps({k: v for k, v in f.items() if k != "new"}),
        } for position, f in enumerate(batch)]
        try:
            response = sns.publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        except Exception as exc:  # botocore's errors: all of them mean "not published"
            errors.extend(f"finding {f['finding_id']}: not published ({exc})" for f in batch)
            continue
        for failed in response.get("Failed", []):
            finding = batch[int(failed["Id"])]
            errors.append(f"finding {finding['finding_id']}: not published "
                          f"({failed.get('Code')}: {failed.get('Message')})")
    return errors


@dataclass
class DetectionRun:
    window: Window
    findings: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def new(self) -> list[dict[str, Any]]:
        return [finding for finding in self.findings if finding["new"]]

    def exit_code(self) -> int:
        if self.errors:
            return EXIT_FAILED
        return EXIT_RULES_SKIPPED if self.skipped else EXIT_OK

    def summary(self) -> dict[str, Any]:
        return {"from": iso(self.window.start), "to": iso(self.window.end),
                "findings": len(self.findings), "new": len(self.new), "per_rule": self.counts,
                "skipped": self.skipped, "errors": self.errors}


def resolve_window(store: Store, start: datetime | None, end: datetime | None, now: datetime,
                   delay: timedelta) -> Window:
    if start is not None or end is not None:
        end = end or now - delay
        return Window(start or end - FIRST_RUN_LOOKBACK, end)
    end = now - delay
    last_end = store.window_end()
    return Window(last_end or end - FIRST_RUN_LOOKBACK, end, from_state=True)


def run_detection(store: Store, ruleset: RuleSet, window: Window, sns: Any = None,
                  topic_arn: str | None = None,
                  now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> DetectionRun:
    """Every rule over the window; findings recorded, the new ones published."""
    run = DetectionRun(window, skipped=list(ruleset.skipped))
    if window.start >= window.end:
        log.info("empty window", extra={"from": iso(window.start), "to": iso(window.end)})
        return run
    detected_at = now()
    for rule in ruleset.rules:
        try:
            query = for_engine(rule["query"], store.engine)
            hits = [hit for hit in store.search(query, window, fieldref.source_fields(rule))
                    if fieldref.matches(rule, hit.get("_source", {}))]
        except EngineUnsupported as exc:
            run.skipped.append({"id": rule["id"], "title": rule.get("title", ""), "reason": str(exc)})
            continue
        except ClusterError as exc:
            run.errors.append(f"rule {rule['id']}: {exc}")
            continue
        findings = [finding_for(rule, hit, detected_at) for hit in hits]
        run.counts[rule["id"]] = len(findings)
        try:
            errors = store.record(findings)[1]
        except ClusterError as exc:
            errors = [f"rule {rule['id']}: {exc}"]
        run.errors.extend(errors)
        run.findings.extend(findings)
        log.info("rule ran", extra={"rule_id": rule["id"], "findings": len(findings)})
    if sns is not None and topic_arn and run.new:
        run.errors.extend(publish(sns, topic_arn, run.new))
    if window.from_state and not run.errors:
        store.save_window_end(window.end)
    for skipped in run.skipped:
        log.warning("rule skipped", extra={"rule_id": skipped["id"], "reason": skipped["reason"]})
    return run


def sns_client(settings: Settings) -> Any:
    if not settings.findings_topic_arn:
        return None
    import boto3

    return boto3.client("sns")


def run_scheduled(settings: Settings, cluster: Cluster, engine: Engine,
                  bundle: Path | None = None) -> dict[str, Any]:
    """The Lambda's scheduled detection: the packaged rules over the default window."""
    bundle = bundle or PACKAGED_RULES
    if not bundle.exists():
        raise DetectionError(f"no packaged rules at {bundle.name} (build with scripts/package.py)")
    ruleset = load_rules([bundle])
    store = Store(cluster, engine, settings.index_prefix)
    window = resolve_window(store, None, None, datetime.now(timezone.utc),
                            timedelta(minutes=settings.detection_delay_minutes))
    run = run_detection(store, ruleset, window, sns_client(settings), settings.findings_topic_arn)
    summary = run.summary()
    log.info("detection done", extra={k: v for k, v in summary.items() if k != "per_rule"})
    if run.errors:  # fails the invocation: retried, the window (state) not yet advanced
        raise DetectionError(f"{len(run.errors)} detection error(s): {'; '.join(run.errors)}")
    return summary


# -- Command line -----------------------------------------------------------------------------

def print_table(run: DetectionRun, rules: list[dict[str, Any]]) -> None:
    titles = {rule["id"]: rule.get("title", "") for rule in rules}
    print(f"window {iso(run.window.start)} .. {iso(run.window.end)}")
    if run.findings:
        print(f"{'eventTime':24} {'level':8} {'rule':44} {'eventName':28} {'user':40} eventID")
        for f in sorted(run.findings, key=lambda f: (str(f.get("eventTime")), f["rule_id"])):
            print(f"{str(f.get('eventTime', '')):24} {f['level']:8} {f['rule_title'][:44]:44} "
                  f"{str(f.get('eventName', ''))[:28]:28} {str(f.get('user') or '')[:40]:40} "
                  f"{f['eventID']}")
    print("findings per rule:")
    for rule_id, count in run.counts.items():
        print(f"  {count:6}  {titles.get(rule_id, '')} ({rule_id})")
    print(f"findings: {len(run.findings)} ({len(run.new)} new)")
    for skipped in run.skipped:
        print(f"SKIPPED {skipped['id']} {skipped.get('title', '')}: {skipped['reason']}")
    for error in run.errors:
        print(f"ERROR {error}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detect", description=__doc__.splitlines()[0],
                                     epilog="Exit codes: 0 every rule ran; 1 a search, a write or "
                                     "a publication failed; 2 bad usage, no rule or cluster "
                                     "unreachable; 3 some rules could not be converted.")
    parser.add_argument("rules", nargs="+", metavar="RULES",
                        help="Sigma YAML files or directories, or rule bundles (.json)")
    parser.add_argument("--from", dest="start", type=str, help="window start (eventTime, ISO 8601)")
    parser.add_argument("--to", dest="end", type=str, help="window end, excluded")
    parser.add_argument("--json", action="store_true", help="one JSON object per finding")
    parser.add_argument("--retry-limit", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    from cloudtrail_es.commands.common import settings_from
    from cloudtrail_es.write.engine import detect as detect_engine
    from cloudtrail_es.core.logs import configure_logging

    configure_logging(args.log_level)
    try:
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
        ruleset = load_rules(args.rules)
        if not ruleset.rules and not ruleset.skipped:
            raise DetectionError(f"no Sigma rule in {' '.join(args.rules)}")
        settings = settings_from(args)
        cluster = create_cluster(settings)
        engine = detect_engine(cluster, settings.serverless, settings.client_ids)
        store = Store(cluster, engine, settings.index_prefix)
        window = resolve_window(store, start, end, datetime.now(timezone.utc),
                                timedelta(minutes=settings.detection_delay_minutes))
    except (ConfigurationError, ClusterError, DetectionError) as exc:
        print(f"detect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        run = run_detection(store, ruleset, window, sns_client(settings),
                            settings.findings_topic_arn)
    except ClusterError as exc:
        print(f"detect: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        for finding in run.findings:
            print(json.dumps(finding))
        for skipped in run.skipped:
            print(f"SKIPPED {skipped['id']}: {skipped['reason']}", file=sys.stderr)
        for error in run.errors:
            print(f"ERROR {error}", file=sys.stderr)
    else:
        print_table(run, ruleset.rules)
    return run.exit_code()


if __name__ == "__main__":
    sys.exit(main())
