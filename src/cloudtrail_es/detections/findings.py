"""Findings and their notifications: one document per rule and event, sent to SNS exactly once.

A finding is recorded (``create``: a rerun adds nothing) with its notification state, then
sent by the outbox, whichever run comes next; the cluster's copy is the ledger:

* ``pending``: recorded, not yet sent (every finding when a topic is set);
* ``sending``: claimed by one run (a compare-and-set on its sequence number, so two runs
  never both take it) at ``claimed_at``; a claim older than ``CLAIM_LEASE`` is taken again;
* ``sent``: SNS accepted it (``notified_at``);
* ``none``: recorded while no topic was set; never sent.

A run that stops between publishing and marking leaves its claim to expire, and the finding
is published again: on a FIFO topic with the same deduplication id (the finding's id), which
SNS drops within its five-minute window; on a standard topic, once more.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

from cloudtrail_es.core.errors import ClusterError
from cloudtrail_es.write.cluster import Cluster
from cloudtrail_es.write.engine import Engine

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, NONE = "pending", "sending", "sent", "none"
#: A claim older than this is abandoned (its run stopped): another run may take it.
CLAIM_LEASE = timedelta(minutes=2)
SNS_BATCH = 10
OUTBOX_PAGE = 100
#: Event fields copied into a finding.
EVENT_FIELDS = ("eventID", "eventTime", "eventName", "eventSource", "awsRegion",
                "sourceIPAddress", "recipientAccountId", "errorCode")
#: What is not part of a notification's message: the ledger's own fields.
LEDGER_FIELDS = ("notification", "claimed_at", "notified_at", "new")

_KEYWORDS = ("finding_id", "rule_id", "rule_title", "level", "tags", "eventID", "index",
             "eventName", "eventSource", "awsRegion", "sourceIPAddress", "recipientAccountId",
             "errorCode", "user", "user_type", "notification")
MAPPING = {
    "dynamic": False,
    "properties": {
        **{name: {"type": "keyword"} for name in _KEYWORDS},
        "eventTime": {"type": "date", "ignore_malformed": True},
        "detected_at": {"type": "date"},
        "claimed_at": {"type": "date"},
        "notified_at": {"type": "date"},
    },
}


def answer(response: Any, what: str) -> Any:
    """The JSON of a 200 answer, else ClusterError saying what could not be done (a proxy's
    HTML page, a truncated body: never a bare JSONDecodeError that stops the run)."""
    if response.status_code != 200:
        raise ClusterError(what, response)
    try:
        return response.json()
    except ValueError:
        raise ClusterError(f"{what}: the answer is not JSON", response) from None


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def finding_id(rule_id: str, event_doc_id: str) -> str:
    """One finding per rule and event, whatever run finds it."""
    return hashlib.sha256(f"{rule_id}\n{event_doc_id}".encode("utf-8")).hexdigest()


def finding_for(rule: dict[str, Any], hit: dict[str, Any], detected_at: datetime,
                notification: str) -> dict[str, Any]:
    source = hit.get("_source", {})
    identity = source.get("userIdentity") or {}
    finding = {
        "finding_id": finding_id(rule["id"], hit["_id"]),
        "rule_id": rule["id"], "rule_title": rule.get("title", ""),
        "level": rule.get("level", ""), "tags": rule.get("tags", []),
        "index": hit["_index"],
        **{name: source[name] for name in EVENT_FIELDS if name in source},
        "user": identity.get("arn"), "user_type": identity.get("type"),
        "detected_at": iso(detected_at), "notification": notification,
    }
    finding.setdefault("eventID", hit["_id"])
    return finding


def message(finding: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in finding.items() if k not in LEDGER_FIELDS})


@dataclass
class Delivery:
    """What one pass of the outbox did."""

    sent: int = 0
    #: Findings still to send after the pass (failed, claimed by another run, or not reached).
    unsent: int = 0
    errors: list[str] = field(default_factory=list)


class Outbox:
    """Sends the findings index's pending findings: claim, publish, mark, a page at a time."""

    def __init__(self, cluster: Cluster, engine: Engine, index: str, sns: Any, topic_arn: str,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.cluster = cluster
        self.engine = engine
        self.index = index
        self.sns = sns
        self.topic_arn = topic_arn
        self.fifo = topic_arn.endswith(".fifo")
        self.now = now

    def deliver(self) -> Delivery:
        """Every pending finding (and every abandoned claim) published once, then marked sent."""
        delivery = Delivery()
        self._refresh()
        after: list[Any] | None = None
        while True:
            page = self._pending_page(after)
            if not page:
                break
            after = page[-1]["sort"]
            claimed = self._claim(page, delivery)
            for start in range(0, len(claimed), SNS_BATCH):  # a crash repeats one batch at most
                batch = claimed[start:start + SNS_BATCH]
                published = self._publish(batch, delivery)
                self._mark(published, SENT, delivery, notified_at=iso(self.now()))
                failed = [hit for hit in batch if hit not in published]
                if failed:  # sent again by the next run, without waiting for the lease
                    self._mark(failed, PENDING, delivery)
        delivery.unsent = self.count_unsent()
        return delivery

    def count_unsent(self) -> int:
        self._refresh()
        response = self.cluster.request("POST", f"/{self.index}/_count",
                                        {"query": self._unsent_query(lease=False)})
        if response.status_code == 404:
            return 0
        return int(answer(response, f"cannot count the unsent findings of {self.index}")["count"])

    def _refresh(self) -> None:
        response = self.cluster.request("POST", f"/{self.index}/_refresh")
        if response.status_code not in (200, 404):
            raise ClusterError(f"cannot refresh {self.index}", response)

    def _unsent_query(self, lease: bool = True) -> dict[str, Any]:
        abandoned: dict[str, Any] = {"term": {"notification": SENDING}}
        if lease:
            abandoned = {"bool": {"filter": [abandoned, {"range": {"claimed_at": {
                "lt": iso(self.now() - CLAIM_LEASE)}}}]}}
        return {"bool": {"should": [{"term": {"notification": PENDING}}, abandoned],
                         "minimum_should_match": 1}}

    def _pending_page(self, after: list[Any] | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"size": OUTBOX_PAGE,
                                "sort": [{"finding_id": {"order": "asc", "unmapped_type": "keyword"}}],
                                "seq_no_primary_term": True, "query": self._unsent_query()}
        if after:
            body["search_after"] = after
        response = self.cluster.request("POST", f"/{self.index}/_search", body)
        if response.status_code == 404:
            return []
        return list(answer(response, f"cannot read the unsent findings of {self.index}")["hits"]["hits"])

    def _bulk_update(self, hits: list[dict[str, Any]], doc: dict[str, Any],
                     compare: bool) -> Iterator[tuple[dict[str, Any], int, Any]]:
        lines = []
        for hit in hits:
            action: dict[str, Any] = {"_index": self.index, "_id": hit["_id"]}
            if self.engine.doc_type:
                action["_type"] = self.engine.doc_type
            if compare:
                action.update(if_seq_no=hit["_seq_no"], if_primary_term=hit["_primary_term"])
            lines.append(json.dumps({"update": action}))
            lines.append(json.dumps({"doc": doc}))
        response = self.cluster.request(
            "POST", "/_bulk?refresh=true", data=("\n".join(lines) + "\n").encode("utf-8"),
            headers={"Content-Type": "application/x-ndjson"})
        items = answer(response, f"cannot update findings in {self.index}")["items"]
        if len(items) != len(hits):
            raise ClusterError(f"bulk answer lists {len(items)} items for {len(hits)}", response)
        for hit, item in zip(hits, items):
            result = item["update"]
            yield hit, result.get("status", 0), result.get("error")

    def _claim(self, page: list[dict[str, Any]], delivery: Delivery) -> list[dict[str, Any]]:
        """The hits this run now holds; a 409 means another run took the finding first."""
        claimed = []
        doc = {"notification": SENDING, "claimed_at": iso(self.now())}
        for hit, status, error in self._bulk_update(page, doc, compare=True):
            if 200 <= status < 300:
                claimed.append(hit)
            elif status != 409:
                delivery.errors.append(f"finding {hit['_id']}: not claimed (HTTP {status} {error})")
        return claimed

    def _publish(self, batch: list[dict[str, Any]], delivery: Delivery) -> list[dict[str, Any]]:
        """One SNS PublishBatch (ten at most); returns the hits SNS accepted."""
        entries = [self._entry(str(position), hit["_source"]) for position, hit in enumerate(batch)]
        try:
            response = self.sns.publish_batch(TopicArn=self.topic_arn,
                                              PublishBatchRequestEntries=entries)
        except Exception as exc:  # botocore's errors: all of them mean "not published"
            delivery.errors.extend(f"finding {hit['_id']}: not published ({exc})" for hit in batch)
            return []
        failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
        published = []
        for position, hit in enumerate(batch):
            entry = failed.get(str(position))
            if entry is None:
                published.append(hit)
            else:
                delivery.errors.append(f"finding {hit['_id']}: not published "
                                       f"({entry.get('Code')}: {entry.get('Message')})")
        return published

    def _entry(self, entry_id: str, finding: dict[str, Any]) -> dict[str, Any]:
        entry = {"Id": entry_id,
                 "Subject": f"[{finding.get('level') or 'finding'}] {finding.get('rule_title', '')}"[:100],
                 "Message": message(finding)}
        if self.fifo:
            entry["MessageGroupId"] = str(finding.get("rule_id") or "findings")[:128]
            entry["MessageDeduplicationId"] = finding["finding_id"]
        return entry

    def _mark(self, hits: list[dict[str, Any]], state: str, delivery: Delivery,
              **fields: str) -> None:
        if not hits:
            return
        outcomes = self._bulk_update(hits, {"notification": state, **fields}, compare=False)
        for hit, status, error in outcomes:
            if not 200 <= status < 300:
                delivery.errors.append(f"finding {hit['_id']}: not marked {state} "
                                       f"(HTTP {status} {error})")
            elif state == SENT:
                delivery.sent += 1
