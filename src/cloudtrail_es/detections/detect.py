"""Run Sigma rules over the loaded events; record and announce what they find.

``python -m cloudtrail_es.detections.detect RULES... [--from TIME] [--to TIME] [--json]``

RULES are Sigma YAML files or directories (converted here, which needs pySigma), or rule
bundles (``.json``, converted by ``scripts/package.py``: the Lambda's runtime has no pySigma).
Without ``--from``/``--to`` each rule runs by arrival (``event.ingested``) from where its last
run of the same scope ended (``--scope``; the Lambda's schedule has its own) to
``DETECTION_DELAY_MINUTES`` before now, so an event that arrives days late is still checked,
once; positions are kept in the cluster (``PREFIX_findings_state``), one per scope and rule.
An explicit ``--from``/``--to`` (by ``eventTime``, or by arrival with ``--by-arrival``) moves
no position. Only this deployment's ``PREFIX-YYYY-MM`` indexes are searched, a page at a
time; each rule records at most ``DETECTION_MAX_FINDINGS`` findings a run (the rest: next run).
Findings go to ``PREFIX_findings`` (one document per rule and event: reruns add nothing) with
their notification state; with ``FINDINGS_TOPIC_ARN`` every run first sends what is unsent
(``findings.Outbox``), then the new ones.

Exit codes: 0 every rule ran; 1 a rule failed (the others ran and moved on), or findings could
not all be written or sent; 2 bad usage or settings, no rule, or the cluster unreachable;
3 every rule that could be converted ran, but some could not (listed with the reason).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict, deque
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator, Sequence

from cloudtrail_es.core import names
from cloudtrail_es.core.config import (DETECTION_CATCH_UP_HOURS, DETECTION_MAX_FINDINGS,
                                       DetectionSettings, Settings)
from cloudtrail_es.core.errors import ClusterError, ConfigurationError, DetectionError, EngineUnsupported
from cloudtrail_es.detections import fieldref
from cloudtrail_es.detections.findings import (EVENT_FIELDS, NONE, PENDING, Delivery, Outbox, answer,
                                               finding_for, finding_id, iso)
from cloudtrail_es.detections.findings import MAPPING as FINDINGS_MAPPING
from cloudtrail_es.write.bulk import BulkItem, BulkWriter, dumps
from cloudtrail_es.write.cluster import Cluster, create_cluster
from cloudtrail_es.write.engine import Engine

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_RULES_SKIPPED = 3

#: Rules converted at package time, shipped inside the package (see scripts/package.py).
PACKAGED_RULES = Path(__file__).with_name("rules.json")
FINDINGS_SUFFIX = "_findings"
STATE_SUFFIX = "_findings_state"
#: Position scopes: the Lambda's schedule, and command-line runs unless ``--scope`` says.
SCHEDULE_SCOPE = "schedule"
MANUAL_SCOPE = "manual"
#: A rule without a position looks back this far.
FIRST_RUN_LOOKBACK = timedelta(days=1)
PAGE_SIZE = 1000
KEEP_ALIVE = "2m"
TABLE_ROWS = 1000
#: The windows' fields: when the event was indexed (ECS), and when it happened.
ARRIVAL = "event.ingested"
EVENT_TIME = "eventTime"
STATE_MAPPING = {"dynamic": False, "properties": {
    "scope": {"type": "keyword"}, "rule_id": {"type": "keyword"},
    "window_end": {"type": "date"}, "failing_since": {"type": "date"},
    "updated_at": {"type": "date"}}}


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
            fields = query[kind]
            if not isinstance(fields, dict) or len(fields) != 1:
                return query
            (name, body), = fields.items()
            if not isinstance(body, dict) or not body.get("case_insensitive"):
                return query  # the short form {"term": {field: value}} is case-sensitive
            if kind == "regexp":
                raise EngineUnsupported("a case-insensitive regular expression (re|i) needs "
                                        "OpenSearch or Elasticsearch 7.10+")
            value = body["value"]
            regexp = (_letter_classes(value) if kind == "term" else
                      _letter_classes(value) + ".*" if kind == "prefix" else
                      _wildcard_regexp(value))
            return {"regexp": {name: {"value": regexp, "flags": "NONE"}}}
    return {key: for_engine(value, engine) for key, value in query.items()}


__all__ = ["finding_id", "iso", "main", "run_scheduled", "Detector", "Store", "Window"]


# -- Windows and each rule's position ------------------------------------------------------

def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{text!r} is not an ISO 8601 time (2024-03-13T08:30:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    """``[start, end)`` on ``field``: ``event.ingested`` (arrival) or ``eventTime``."""

    start: datetime
    end: datetime
    field: str = EVENT_TIME
    #: Whether the run moves the rule's stored position (scheduled windows do, explicit ones don't).
    from_state: bool = False

    def query(self) -> dict[str, Any]:
        return {"range": {self.field: {"gte": iso(self.start), "lt": iso(self.end)}}}


@dataclass
class RulePosition:
    """Where one rule of one scope (the schedule, a person's runs) has checked up to."""

    window_end: datetime | None = None
    failing_since: datetime | None = None
    last_error: str = ""

    def document(self, scope: str, rule_id: str, now: datetime) -> dict[str, Any]:
        return {"scope": scope, "rule_id": rule_id,
                "window_end": iso(self.window_end) if self.window_end else None,
                "failing_since": iso(self.failing_since) if self.failing_since else None,
                "last_error": self.last_error[:2000], "updated_at": iso(now)}


def scheduled_window(position: RulePosition, now: datetime, delay: timedelta,
                     catch_up: timedelta) -> tuple[Window, datetime | None]:
    """The rule's next window by arrival, and where it starts if the catch-up bound cut it
    (events that arrived between the old position and that start are not checked: said)."""
    end = now - delay
    if position.window_end is None:  # a first run: nothing skipped, nothing to report
        return Window(end - min(FIRST_RUN_LOOKBACK, catch_up), end, ARRIVAL, from_state=True), None
    start, gap_end = position.window_end, None
    if start < end - catch_up:
        start = gap_end = end - catch_up
    return Window(start, max(start, end), ARRIVAL, from_state=True), gap_end


# -- The cluster side -------------------------------------------------------------------------

def search_pattern(prefix: str) -> str:
    """Our monthly indexes, and not another deployment's whose prefix extends ours
    (``PREFIX-org-YYYY-MM``, ``PREFIX-org_findings``): the monthly names are then listed."""
    return f"{prefix}-*,-{prefix}-*-*-*,-{prefix}-*_*"


class Store:
    """The findings index, the rules' positions, and the searches, over the project's cluster."""

    def __init__(self, cluster: Cluster, engine: Engine, prefix: str,
                 max_docs: int = 2000, max_bytes: int = 5 * 1024 * 1024) -> None:
        self.cluster = cluster
        self.engine = engine
        self.prefix = prefix
        self.findings = findings_index(prefix)
        self.state = prefix + STATE_SUFFIX
        self.writer = BulkWriter(cluster, max_docs, max_bytes, compress=False)
        self._doc_type = engine.doc_type or "_doc"
        self._ensured: set[str] = set()

    def ensure(self, index: str, mapping: dict[str, Any]) -> None:
        if index in self._ensured:
            return
        body = self.engine.index_body({"settings": {"index": {"number_of_shards": 1}},
                                       "mappings": mapping})
        response = self.cluster.request("PUT", f"/{index}", body)
        if response.status_code != 200:
            if "already_exists" not in response.text:
                raise ClusterError(f"cannot create {index}", response)
            # made by an earlier version: its new fields added (a mapping update only adds)
            path = f"/{index}/_mapping" + (f"/{self.engine.doc_type}" if self.engine.doc_type else "")
            update = self.cluster.request("PUT", path, {"properties": mapping["properties"]})
            if update.status_code != 200:
                raise ClusterError(f"cannot add the detector's fields to {index}", update)
        self._ensured.add(index)

    # Positions

    def _position_path(self, scope: str, rule_id: str) -> str:
        return f"/{self.state}/{self._doc_type}/{names.segment(f'{scope}:{rule_id}')}"

    def position(self, scope: str, rule_id: str) -> RulePosition:
        response = self.cluster.request("GET", self._position_path(scope, rule_id))
        if response.status_code == 404:
            return RulePosition()
        source = answer(response, f"cannot read rule {rule_id}'s position in {self.state}")["_source"]
        return RulePosition(
            window_end=parse_time(source["window_end"]) if source.get("window_end") else None,
            failing_since=parse_time(source["failing_since"]) if source.get("failing_since") else None,
            last_error=source.get("last_error") or "")

    def save_position(self, scope: str, rule_id: str, position: RulePosition, now: datetime) -> None:
        self.ensure(self.state, STATE_MAPPING)
        response = self.cluster.request("PUT", self._position_path(scope, rule_id) + "?refresh=true",
                                        position.document(scope, rule_id, now))
        if response.status_code not in (200, 201):
            raise ClusterError(f"cannot save rule {rule_id}'s position in {self.state}", response)

    # Searches

    def monthly_indexes(self) -> list[str]:
        """This deployment's open ``PREFIX-YYYY-MM`` indexes, exactly (a closed one cannot be
        searched; its status is read, as Elasticsearch 6 has no ``expand_wildcards`` here)."""
        response = self.cluster.request(
            "GET", f"/_cat/indices/{search_pattern(self.prefix)}?h=index,status&format=json")
        if response.status_code == 404:
            return []
        what = f"cannot list the indexes {self.prefix}-YYYY-MM"
        listed = answer(response, what)
        if type(listed) is not list or not all(type(row) is dict for row in listed):
            raise ClusterError(f"{what}: the answer is not a list of objects", response)
        return sorted(row["index"] for row in listed if row.get("status") == "open"
                      and names.is_monthly_index(row.get("index"), self.prefix))

    def hits(self, query: dict[str, Any], window: Window, indexes: list[str],
             fields: Sequence[str] = ()) -> Generator[dict[str, Any], None, None]:
        """Every event the query matches in the window, oldest first by the window's field,
        a page at a time: a point in time where the engine has one, else a scroll; either
        is released however the iteration ends. ``fields`` are brought in ``_source``
        besides the finding's own."""
        if not indexes:
            return
        body: dict[str, Any] = {
            "size": PAGE_SIZE, "sort": [{window.field: "asc"}],
            "_source": [*EVENT_FIELDS, "userIdentity.arn", "userIdentity.type", *fields],
            "query": {"bool": {"filter": [window.query(), {"terms": {"_index": indexes}}, query]}}}
        if pages_by_pit(self.engine):
            yield from self._pit_pages(body)
        else:
            yield from self._scroll_pages(body)

    def _search(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        page = answer(self.cluster.request("POST", path, body), "search failed")
        return list(page["hits"]["hits"])

    def _pit_pages(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        # The point in time names the indexes; the searches through it must not.
        response = self.cluster.request("POST", f"/{search_pattern(self.prefix)}/_pit"
                                        f"?keep_alive={KEEP_ALIVE}")
        pit_id = answer(response, "cannot open a point in time")["id"]
        try:
            body = {**body, "sort": [*body["sort"], {"_shard_doc": "asc"}]}
            while True:
                hits = self._search("/_search", {**body, "pit": {"id": pit_id, "keep_alive": KEEP_ALIVE}})
                yield from hits
                if len(hits) < PAGE_SIZE:
                    return
                body = {**body, "search_after": hits[-1]["sort"]}
        finally:
            _release(self.cluster, "DELETE", "/_pit", {"id": pit_id})

    def _scroll_pages(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        page = answer(self.cluster.request(
            "POST", f"/{search_pattern(self.prefix)}/_search?scroll={KEEP_ALIVE}"
            "&ignore_unavailable=true&allow_no_indices=true", body), "search failed")
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                yield from page["hits"]["hits"]
                scroll_id = page.get("_scroll_id") or scroll_id
                page = answer(self.cluster.request(
                    "POST", "/_search/scroll", {"scroll": KEEP_ALIVE, "scroll_id": scroll_id}),
                    "search failed (scroll)")
        finally:
            if scroll_id:
                _release(self.cluster, "DELETE", "/_search/scroll", {"scroll_id": [scroll_id]})

    # Findings

    def record(self, findings: Iterable[dict[str, Any]],
               deadline: float) -> Iterator[tuple[dict[str, Any], int, str]]:
        """Create each finding once, in bounded ``_bulk`` requests (the write path's chunker
        and writer): yields each finding with its status (201 new, 409 there already) and,
        when neither, the reason."""
        self.ensure(self.findings, FINDINGS_MAPPING)
        # By id, in the order sent: one event under two indexes (a file delivered twice, into
        # two months) is one finding, sent twice; the cluster answers 201, then 409.
        in_flight: dict[str, deque[dict[str, Any]]] = defaultdict(deque)

        def items() -> Iterator[BulkItem]:
            for finding in findings:
                in_flight[finding["finding_id"]].append(finding)
                yield BulkItem(self.findings, finding["finding_id"],
                               self._create_line(finding["finding_id"]) + dumps(finding) + b"\n")

        outcomes = self.writer.outcomes(items(), deadline)
        while True:
            try:
                outcome = next(outcomes)
            except StopIteration:
                return
            except ValueError as exc:  # a proxy's page instead of the cluster's JSON answer
                raise ClusterError(f"cannot write findings to {self.findings}: the answer is "
                                   f"not JSON ({exc})") from None
            sent = in_flight[outcome.doc_id]
            finding = sent.popleft()
            if not sent:
                del in_flight[outcome.doc_id]
            yield finding, outcome.status, "" if outcome.ok else outcome.reason

    def _create_line(self, doc_id: str) -> bytes:
        action: dict[str, Any] = {"_index": self.findings, "_id": doc_id}
        if self.engine.doc_type:
            action["_type"] = self.engine.doc_type
        return dumps({"create": action}) + b"\n"


def pages_by_pit(engine: Engine) -> bool:
    """Whether hits are paged through a point in time by ``search_after``, which is exact only
    where ``_shard_doc`` breaks ties: Elasticsearch 7.12+. OpenSearch's point in time has no
    such tiebreaker (hits of one millisecond would be skipped or repeated at a page's edge),
    so there, and on older engines, a scroll pages."""
    return engine.distribution == "elasticsearch" and engine.version >= (7, 12)


def _release(cluster: Cluster, method: str, path: str, body: dict[str, Any]) -> None:
    """Free a scroll or point in time; they expire anyway, so a failure is only logged."""
    try:
        response = cluster.request(method, path, body)
        if response.status_code not in (200, 404):
            log.warning("search context not released", extra={"path": path,
                                                              "status": response.status_code})
    except ClusterError as exc:
        log.warning("search context not released", extra={"path": path, "error": str(exc)})


# -- A run ------------------------------------------------------------------------------------

@dataclass
class RuleOutcome:
    """One rule's part of a run."""

    rule_id: str
    title: str
    window: Window
    findings: int = 0
    new: int = 0
    #: The cap stopped it: the rest is picked up by the next scheduled run (or said, for an
    #: explicit window) from ``resume_from``.
    capped: bool = False
    resume_from: datetime | None = None
    error: str = ""
    #: The catch-up bound moved its start: events that arrived before were not checked by it.
    gap: tuple[datetime, datetime] | None = None
    #: How far behind now its position is after the run (scheduled runs).
    lag_seconds: float | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.rule_id, "from": iso(self.window.start),
                               "to": iso(self.window.end), "by": self.window.field,
                               "findings": self.findings, "new": self.new}
        if self.capped:
            out["capped"] = True
            out["resume_from"] = iso(self.resume_from) if self.resume_from else None
        if self.error:
            out["error"] = self.error
        if self.gap:
            out["not_checked"] = [iso(self.gap[0]), iso(self.gap[1])]
        if self.lag_seconds is not None:
            out["lag_seconds"] = round(self.lag_seconds, 1)
        return out


@dataclass
class DetectionRun:
    rules: list[RuleOutcome] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    delivery: Delivery = field(default_factory=Delivery)
    #: The first findings (the table shows them; ``--json`` streams them all instead).
    shown: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[RuleOutcome]:
        return [rule for rule in self.rules if rule.error]

    @property
    def findings(self) -> int:
        return sum(rule.findings for rule in self.rules)

    @property
    def new(self) -> int:
        return sum(rule.new for rule in self.rules)

    def exit_code(self) -> int:
        if self.errors or self.failed or self.delivery.errors:
            return EXIT_FAILED
        return EXIT_RULES_SKIPPED if self.skipped else EXIT_OK

    def all_errors(self) -> list[str]:
        return ([f"rule {rule.rule_id}: {rule.error}" for rule in self.failed]
                + self.errors + self.delivery.errors)

    def summary(self) -> dict[str, Any]:
        return {"findings": self.findings, "new": self.new,
                "per_rule": {rule.rule_id: rule.findings for rule in self.rules},
                "rules": [rule.summary() for rule in self.rules],
                "rules_run": len(self.rules) - len(self.failed), "rules_failed": len(self.failed),
                "capped": [rule.rule_id for rule in self.rules if rule.capped],
                "not_checked": {rule.rule_id: [iso(rule.gap[0]), iso(rule.gap[1])]
                                for rule in self.rules if rule.gap},
                "sent": self.delivery.sent, "unsent": self.delivery.unsent,
                "skipped": self.skipped, "errors": self.all_errors()}


FindingSink = Callable[[dict[str, Any]], None]


@dataclass
class Detector:
    """Runs rules for one scope and delivers their notifications; collaborators injected."""

    store: Store
    settings: DetectionSettings = field(default_factory=DetectionSettings)
    outbox: Outbox | None = None
    #: Whose positions the default windows use: the Lambda's schedule, or a person's runs.
    scope: str = SCHEDULE_SCOPE
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    sink: FindingSink | None = None
    deadline: Callable[[], float] = lambda: time.monotonic() + 600

    def run(self, ruleset: RuleSet, window: Window | None = None) -> DetectionRun:
        """What is still unsent first; then every rule over its window (``window``: one
        explicit window for all, moving no position); then the new findings' notifications."""
        run = DetectionRun(skipped=list(ruleset.skipped))
        try:
            self.store.ensure(self.store.findings, FINDINGS_MAPPING)
        except ClusterError as exc:
            run.errors.append(str(exc))
            return run
        self._deliver(run)
        try:
            indexes = self.store.monthly_indexes()
        except ClusterError as exc:
            run.errors.append(str(exc))
            return run
        for rule in ruleset.rules:
            outcome = self._rule(rule, window, indexes, run)
            if outcome is not None:
                run.rules.append(outcome)
        self._deliver(run)
        for skipped in run.skipped:
            log.warning("rule skipped", extra={"rule_id": skipped["id"], "reason": skipped["reason"]})
        return run

    def _deliver(self, run: DetectionRun) -> None:
        if self.outbox is None:
            return
        try:
            delivery = self.outbox.deliver()
        except ClusterError as exc:
            run.delivery.errors.append(f"notifications: {exc}")
            return
        run.delivery.sent += delivery.sent
        run.delivery.unsent = delivery.unsent
        run.delivery.errors.extend(delivery.errors)

    def _rule(self, rule: dict[str, Any], explicit: Window | None, indexes: list[str],
              run: DetectionRun) -> RuleOutcome | None:
        now = self.now()
        position = RulePosition()
        gap_end = None
        try:
            query = for_engine(rule["query"], self.store.engine)
            if explicit is None:
                position = self.store.position(self.scope, rule["id"])
                window, gap_end = scheduled_window(
                    position, now, timedelta(minutes=self.settings.delay_minutes),
                    timedelta(hours=self.settings.catch_up_hours))
            else:
                window = explicit
        except EngineUnsupported as exc:
            run.skipped.append({"id": rule["id"], "title": rule.get("title", ""), "reason": str(exc)})
            return None
        except ClusterError as exc:
            return RuleOutcome(rule["id"], rule.get("title", ""), explicit or Window(now, now),
                               error=str(exc))
        outcome = RuleOutcome(rule["id"], rule.get("title", ""), window)
        if gap_end is not None:
            outcome.gap = (position.window_end or gap_end, gap_end)
            log.error("rule stopped catching up", extra={
                "rule_id": rule["id"], "not_checked_from": iso(outcome.gap[0]),
                "not_checked_to": iso(gap_end)})
        if window.start < window.end:
            try:
                self._findings(rule, query, window, indexes, now, outcome)
            except ClusterError as exc:
                outcome.error = str(exc)
        if window.from_state:
            self._move(rule["id"], position, window, outcome, now)
        log.log(logging.ERROR if outcome.error else logging.INFO, "rule ran",
                extra={k: v for k, v in outcome.summary().items() if k != "id"} | {"rule_id": rule["id"]})
        return outcome

    def _findings(self, rule: dict[str, Any], query: dict[str, Any], window: Window,
                  indexes: list[str], now: datetime, outcome: RuleOutcome) -> None:
        notification = PENDING if self.outbox is not None else NONE
        with closing(self.store.hits(query, window, indexes, fieldref.source_fields(rule))) as hits:
            matching = (hit for hit in hits if fieldref.matches(rule, hit.get("_source", {})))
            self._record((finding_for(rule, hit, now, notification)
                          for hit in up_to_cap(matching, self.settings.max_findings, outcome)), outcome)

    def _record(self, findings: Iterable[dict[str, Any]], outcome: RuleOutcome) -> None:
        errors = []
        for finding, status, reason in self.store.record(findings, self.deadline()):
            if status not in (201, 409):
                errors.append(f"finding {finding['finding_id']}: HTTP {status} {reason}")
                continue
            outcome.new += status == 201
            if self.sink is not None:
                self.sink({**finding, "new": status == 201})
        if errors:
            more = f"; and {len(errors) - 5} more not recorded" if len(errors) > 5 else ""
            outcome.error = "; ".join(errors[:5]) + more

    def _move(self, rule_id: str, position: RulePosition, window: Window, outcome: RuleOutcome,
              now: datetime) -> None:
        """The rule's position: past its window when every finding was recorded; at the
        first moment not done when the cap stopped it; where it was when it failed."""
        if outcome.error:
            position.failing_since = position.failing_since or now
            position.last_error = outcome.error
        else:
            position.window_end = (outcome.resume_from if outcome.capped and outcome.resume_from
                                   else window.end)
            position.failing_since, position.last_error = None, ""
        if position.window_end is not None:
            outcome.lag_seconds = (now - position.window_end).total_seconds()
        try:
            self.store.save_position(self.scope, rule_id, position, now)
        except ClusterError as exc:  # the next run does the window again: its findings exist
            outcome.error = f"{outcome.error}; {exc}" if outcome.error else str(exc)


def up_to_cap(hits: Iterable[dict[str, Any]], cap: int, outcome: RuleOutcome) -> Iterator[dict[str, Any]]:
    """The hits (sorted by the window's field) up to ``cap``, and past it those of the same
    millisecond as the last one taken: the next window starts at the first one left, which
    ``outcome`` records (``capped``, ``resume_from``), so nothing is skipped or taken twice."""
    last: Any = _NOTHING
    for hit in hits:
        moment = (hit.get("sort") or [None])[0]  # the window field, epoch milliseconds
        if outcome.findings >= cap and moment != last:
            outcome.capped = True
            outcome.resume_from = _from_millis(moment)
            return
        last = moment
        outcome.findings += 1
        yield hit


_NOTHING = object()


def _from_millis(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value) / 1000, timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


def sns_client(settings: Settings) -> Any:
    if not settings.findings_topic_arn:
        return None
    import boto3

    return boto3.client("sns")


def detector_for(settings: Settings, detection: DetectionSettings, cluster: Cluster, engine: Engine,
                 scope: str = SCHEDULE_SCOPE, sns: Any = None) -> Detector:
    store = Store(cluster, engine, settings.index_prefix, settings.bulk_max_docs,
                  settings.bulk_max_bytes)
    outbox = None
    if settings.findings_topic_arn:
        outbox = Outbox(cluster, engine, store.findings, sns or sns_client(settings),
                        settings.findings_topic_arn)
    return Detector(store, detection, outbox, scope)


def run_scheduled(settings: Settings, cluster: Cluster, engine: Engine,
                  bundle: Path | None = None, detection: DetectionSettings | None = None,
                  deadline: Callable[[], float] | None = None) -> tuple[dict[str, Any], DetectionRun]:
    """The Lambda's scheduled detection: the packaged rules, each over its own window."""
    bundle = bundle or PACKAGED_RULES
    if not bundle.exists():
        raise DetectionError(f"no packaged rules at {bundle.name} (build with scripts/package.py)")
    ruleset = load_rules([bundle])
    detector = detector_for(settings, detection or DetectionSettings.from_env(), cluster, engine)
    if deadline is not None:  # a write's retries stop before the Lambda's time runs out
        detector.deadline = deadline
    run = detector.run(ruleset)
    summary = run.summary()
    log.info("detection done", extra={k: v for k, v in summary.items() if k not in ("per_rule", "rules")})
    return summary, run


# -- Command line -----------------------------------------------------------------------------

def print_table(run: DetectionRun, rules: list[dict[str, Any]]) -> None:
    titles = {rule["id"]: rule.get("title", "") for rule in rules}
    if run.shown:
        print(f"{'eventTime':24} {'level':8} {'rule':44} {'eventName':28} {'user':40} eventID")
        for f in sorted(run.shown, key=lambda f: (str(f.get("eventTime")), f["rule_id"])):
            print(f"{str(f.get('eventTime', '')):24} {f['level']:8} {f['rule_title'][:44]:44} "
                  f"{str(f.get('eventName', ''))[:28]:28} {str(f.get('user') or '')[:40]:40} "
                  f"{f['eventID']}")
        if run.findings > len(run.shown):
            print(f"... and {run.findings - len(run.shown)} more (--json lists them all)")
    print("findings per rule:")
    for rule in run.rules:
        print(f"  {rule.findings:6}  {titles.get(rule.rule_id, '')} ({rule.rule_id}) "
              f"{rule.window.field} {iso(rule.window.start)} .. {iso(rule.window.end)}")
    print(f"findings: {run.findings} ({run.new} new); notifications sent: {run.delivery.sent}, "
          f"unsent: {run.delivery.unsent}")
    _print_problems(run, sys.stdout)


def _print_problems(run: DetectionRun, stream: Any) -> None:
    for skipped in run.skipped:
        print(f"SKIPPED {skipped['id']}: {skipped['reason']} ({skipped.get('title', '')})",
              file=stream)
    for rule in run.rules:
        if rule.capped:
            resume = iso(rule.resume_from) if rule.resume_from else "?"
            where = (f"the next run resumes from {resume}" if rule.window.from_state
                     else f"the rest: --from {resume}")
            print(f"CAPPED {rule.rule_id}: stopped at {rule.findings} findings "
                  f"({DETECTION_MAX_FINDINGS}); {where}", file=stream)
        if rule.gap:
            gap_start, gap_end = rule.gap
            print(f"NOT CHECKED {rule.rule_id}: events that arrived from {iso(gap_start)} to "
                  f"{iso(gap_end)} (beyond {DETECTION_CATCH_UP_HOURS}): run detect "
                  f"--by-arrival --from {iso(gap_start)} --to {iso(gap_end)}", file=stream)
    for error in run.all_errors():
        print(f"ERROR {error}", file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detect", description=__doc__.splitlines()[0],
                                     epilog="Exit codes: 0 every rule ran; 1 a rule, a write or "
                                     "a notification failed; 2 bad usage or settings, no rule or "
                                     "cluster unreachable; 3 some rules could not be converted.")
    parser.add_argument("rules", nargs="+", metavar="RULES",
                        help="Sigma YAML files or directories, or rule bundles (.json)")
    parser.add_argument("--from", dest="start", type=str, help="window start (eventTime, ISO 8601)")
    parser.add_argument("--to", dest="end", type=str, help="window end, excluded")
    parser.add_argument("--by-arrival", action="store_true",
                        help="--from/--to on event.ingested (when the event was indexed)")
    parser.add_argument("--scope", default=MANUAL_SCOPE,
                        help=f"whose rule positions the default window uses (default {MANUAL_SCOPE!r}; "
                        f"the Lambda's schedule is {SCHEDULE_SCOPE!r})")
    parser.add_argument("--json", action="store_true", help="one JSON object per finding")
    parser.add_argument("--retry-limit", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    from cloudtrail_es.commands.common import settings_from
    from cloudtrail_es.core.logs import configure_logging
    from cloudtrail_es.write.engine import detect as detect_engine

    configure_logging(args.log_level)
    try:
        detection = DetectionSettings.from_env()
        window = explicit_window(args, datetime.now(timezone.utc), detection)
        ruleset = load_rules(args.rules)
        if not ruleset.rules and not ruleset.skipped:
            raise DetectionError(f"no Sigma rule in {' '.join(args.rules)}")
        settings = settings_from(args)
        cluster = create_cluster(settings)
        engine = detect_engine(cluster, settings.serverless, settings.client_ids)
        detector = detector_for(settings, detection, cluster, engine, scope=args.scope)
    except (ConfigurationError, ClusterError, DetectionError) as exc:
        print(f"detect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown: list[dict[str, Any]] = []
    detector.sink = ((lambda finding: print(json.dumps(finding))) if args.json else
                     (lambda finding: shown.append(finding) if len(shown) < TABLE_ROWS else None))
    run = detector.run(ruleset, window)
    run.shown = shown
    if args.json:
        _print_problems(run, sys.stderr)
    else:
        print_table(run, ruleset.rules)
    return run.exit_code()


def explicit_window(args: argparse.Namespace, now: datetime,
                    detection: DetectionSettings) -> Window | None:
    """The window ``--from``/``--to`` give (moving no rule's position), or None for the default."""
    if args.start is None and args.end is None:
        if args.by_arrival:
            raise ConfigurationError("--by-arrival needs --from and/or --to")
        return None
    end = parse_time(args.end) if args.end else now - timedelta(minutes=detection.delay_minutes)
    start = parse_time(args.start) if args.start else end - FIRST_RUN_LOOKBACK
    return Window(start, end, ARRIVAL if args.by_arrival else EVENT_TIME)


if __name__ == "__main__":
    sys.exit(main())
