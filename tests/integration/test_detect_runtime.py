"""The detector's runtime against the real OpenSearch and moto SNS/SQS: exactly one
notification per finding whatever step fails or crashes, per-rule positions by arrival,
paging, the per-rule cap, and the deployment's exact scope.

Events are written by the real write path (``Processor.load_events``, which stamps
``event.ingested``); rules are bundles of Query DSL, so pySigma is not needed here.
A fault is injected by wrapping one step of the real collaborators: it either fails (raises
the error the real thing raises) or crashes the run (``Crash``, a BaseException nothing in
the detector catches, as a Lambda killed at that moment)."""
from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
import requests

from cloudtrail_es.core.config import DetectionSettings, Settings
from cloudtrail_es.core.errors import ClusterError
from cloudtrail_es.detections import detect, findings
from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.write.engine import detect as detect_engine
from cloudtrail_es.write.processor import create_processor

from support import MemorySource

pytestmark = pytest.mark.integration

STOP = {"id": "rule-stop-logging", "title": "trail stopped", "level": "high", "tags": [],
        "query": {"term": {"eventName": {"value": "StopLogging"}}}}
KEYS = {"id": "rule-access-key", "title": "access key", "level": "low", "tags": [],
        "query": {"term": {"eventName": {"value": "CreateAccessKey"}}}}
#: The cluster refuses it (a prefix query on a date field): 400 on every run.
REFUSED = {"id": "rule-refused", "title": "refused", "level": "low", "tags": [],
           "query": {"prefix": {"eventTime": {"value": "2024"}}}}


class Crash(BaseException):
    """The run dies here (nothing of the detector catches a BaseException)."""


def event(name: str, number: int, when: datetime) -> dict[str, Any]:
    return {"eventVersion": "1.09", "eventSource": "cloudtrail.amazonaws.com", "eventName": name,
            "eventID": f"{name}-{number}-{uuid.uuid4().hex[:6]}", "awsRegion": "us-east-1",
            "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/eve"}}


@pytest.fixture()
def deployment(loader_env, opensearch_url, monkeypatch):
    """Settings, cluster and engine of a fresh deployment; its indexes deleted after."""
    monkeypatch.delenv("FINDINGS_TOPIC_ARN", raising=False)
    settings = Settings.from_env()
    cluster = create_cluster(settings)
    yield settings, cluster, detect_engine(cluster)
    requests.delete(f"{opensearch_url}/{settings.index_prefix}_*", timeout=60)


def load(settings: Settings, events: list[dict[str, Any]], index: str | None = None,
         distinct_arrivals: bool = False, monkeypatch: Any = None) -> None:
    """Through the write path; with ``distinct_arrivals`` each event gets its own millisecond."""
    processor = create_processor(settings, source=MemorySource({}))
    index = index or f"{settings.index_prefix}-2024-05"
    if distinct_arrivals:  # one write per event, each at its own millisecond (a file's share one)
        ticks = itertools.count(int(time.time() * 1000) - 60_000)
        monkeypatch.setattr(processor._pipeline, "_wall_clock", lambda: next(ticks) / 1000)
        for event in events:
            processor.load_events(index, [event], time.monotonic() + 60)
    else:
        processor.load_events(index, events, time.monotonic() + 60)
    requests.post(f"{settings.es_url}/{index}/_refresh",
                  timeout=60).raise_for_status()


@pytest.fixture()
def topic(aws_env, request):
    """An SNS topic (standard, or FIFO when parametrised so) with an SQS queue subscribed."""
    fifo = getattr(request, "param", False)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    name = f"findings-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    attributes = {"FifoTopic": "true"} if fifo else {}
    arn = sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
    queue = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})[
        "QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn,
                  Attributes={"RawMessageDelivery": "true"})
    return arn, queue


def received(queue: str) -> list[dict[str, Any]]:
    """Every message on the queue (deleted as read)."""
    sqs = boto3.client("sqs")
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                    WaitTimeSeconds=1).get("Messages", [])
        if not batch:
            return out
        out.extend(json.loads(m["Body"]) for m in batch)
        sqs.delete_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def detector(deployment, topic_arn: str | None = None, sns: Any = None, now=None,
             **detection: Any) -> detect.Detector:
    settings, cluster, engine = deployment
    store = detect.Store(cluster, engine, settings.index_prefix, 5, 1 << 20)
    outbox = None
    if topic_arn:
        outbox = findings.Outbox(cluster, engine, store.findings, sns or boto3.client("sns"),
                                 topic_arn, **({"now": now} if now else {}))
    found = detect.Detector(store, DetectionSettings(**{"delay_minutes": 0, **detection}), outbox,
                            detect.SCHEDULE_SCOPE)
    if now:
        found.now = now
    return found


def bundle(*rules: dict[str, Any]) -> detect.RuleSet:
    return detect.RuleSet(rules=[dict(rule) for rule in rules])


def ledger(deployment) -> dict[str, str]:
    """finding id -> notification state, from the findings index."""
    settings = deployment[0]
    url = f"{settings.es_url}/{settings.index_prefix}_findings"
    requests.post(f"{url}/_refresh", timeout=30)
    hits = requests.post(f"{url}/_search", timeout=30, json={"size": 1000}).json()["hits"]["hits"]
    return {hit["_id"]: hit["_source"]["notification"] for hit in hits}


# -- Exactly once -----------------------------------------------------------------------------

class FailingSns:
    """The real moto client; one ``publish_batch`` fails before (or crashes after) SNS takes it."""

    def __init__(self, mode: str) -> None:
        self.real = boto3.client("sns")
        self.mode = mode
        self.calls = 0

    def publish_batch(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2 and self.mode == "fail":
            raise self.real.exceptions.InternalErrorException(
                {"Error": {"Code": "InternalError", "Message": "injected"}}, "PublishBatch")
        answer = self.real.publish_batch(**kwargs)
        if self.calls == 2 and self.mode == "crash":
            raise Crash("after SNS took the batch, before it was marked sent")
        return answer


def _break(monkeypatch, target: Any, name: str, mode: str, after_calls: int = 0) -> None:
    """``target.name`` fails (ClusterError) or crashes once, after ``after_calls`` calls went through."""
    real = getattr(target, name)
    calls = itertools.count()

    def broken(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == after_calls:
            if mode == "crash":
                raise Crash(name)
            raise ClusterError(f"{name} failed (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, broken)


#: (step, fault) -> how many notifications a standard topic sees in all (events: 12).
#: Only a stop between SNS taking a batch and its mark repeats what was claimed and not marked:
#: a crash in publishing the second batch (2) repeats it; a failed or crashed mark of the first
#: batch (10) repeats the page claimed (12) once its claim expires.
MATRIX = {
    ("search", "fail"): 12, ("search", "crash"): 12,
    ("record", "fail"): 12, ("record", "crash"): 12,
    ("deliver-search", "fail"): 12, ("deliver-search", "crash"): 12,
    ("claim", "fail"): 12, ("claim", "crash"): 12,
    ("publish", "fail"): 12, ("publish", "crash"): 14,
    ("mark", "fail"): 22, ("mark", "crash"): 22,
    ("save-position", "fail"): 12, ("save-position", "crash"): 12,
}


#: step -> (which collaborator, its method, calls let through before the fault).
STEPS = {"search": ("store", "monthly_indexes", 0), "deliver-search": ("outbox", "_pending_page", 1),
         "claim": ("outbox", "_claim", 0), "mark": ("outbox", "_mark", 0),
         "save-position": ("store", "save_position", 0)}


def _inject(monkeypatch, run: detect.Detector, step: str, fault: str) -> None:
    if step == "record":
        _break_record(monkeypatch, run.store, fault)
    elif step in STEPS:
        owner, name, after_calls = STEPS[step]
        _break(monkeypatch, getattr(run, owner), name, fault, after_calls)


def _break_record(monkeypatch, store: detect.Store, fault: str) -> None:
    """Recording stops after the first request of 5 findings was answered."""
    real = store.record

    def record_then_fail(items: Any, deadline: float) -> Any:
        for number, outcome in enumerate(real(items, deadline)):
            if number == 5:
                if fault == "crash":
                    raise Crash("record")
                raise ClusterError("record failed (injected)")
            yield outcome

    monkeypatch.setattr(store, "record", record_then_fail)


@pytest.mark.parametrize("step,fault", sorted(MATRIX))
def test_a_fault_at_any_step_neither_loses_nor_doubles_a_notification(
        deployment, topic, monkeypatch, step, fault):
    settings = deployment[0]
    arn, queue = topic
    events = [event("StopLogging", n, datetime(2024, 5, 1, tzinfo=timezone.utc)) for n in range(12)]
    load(settings, events)
    clock = [datetime.now(timezone.utc)]
    now = lambda: clock[0]  # noqa: E731
    sns = FailingSns(fault) if step == "publish" else boto3.client("sns")
    first = detector(deployment, arn, sns, now)
    with pytest.MonkeyPatch.context() as fault_patch:
        _inject(fault_patch, first, step, fault)
        try:
            faulty = first.run(bundle(STOP))
        except Crash:
            faulty = None
    if faulty is not None:  # a failure is reported, never silent
        assert faulty.exit_code() == detect.EXIT_FAILED, faulty.summary()
    # the next runs: one now, one after an abandoned claim's lease, one more
    for later in (timedelta(seconds=1), findings.CLAIM_LEASE + timedelta(seconds=2),
                  findings.CLAIM_LEASE * 2 + timedelta(seconds=3)):
        clock[0] = clock[0] + later
        rerun = detector(deployment, arn, None, now).run(bundle(STOP))
    assert rerun.exit_code() == detect.EXIT_OK, rerun.summary()

    messages = received(queue)
    wanted = {e["eventID"] for e in events}
    assert {m["eventID"] for m in messages} == wanted
    assert len(messages) == MATRIX[(step, fault)]
    assert set(ledger(deployment).values()) == {findings.SENT} and len(ledger(deployment)) == 12
    assert rerun.delivery.unsent == 0


@pytest.mark.parametrize("topic", [True], indirect=True)
@pytest.mark.parametrize("step", ["publish", "mark"])
def test_on_a_fifo_topic_a_crash_after_publishing_is_not_a_repeat(deployment, topic, monkeypatch,
                                                                   step):
    settings = deployment[0]
    arn, queue = topic
    events = [event("StopLogging", n, datetime(2024, 5, 1, tzinfo=timezone.utc)) for n in range(12)]
    load(settings, events)
    clock = [datetime.now(timezone.utc)]
    now = lambda: clock[0]  # noqa: E731
    first = detector(deployment, arn, FailingSns("crash") if step == "publish" else None, now)
    with pytest.MonkeyPatch.context() as fault_patch:
        if step == "mark":
            _inject(fault_patch, first, "mark", "crash")
        with pytest.raises(Crash):
            first.run(bundle(STOP))
    clock[0] += findings.CLAIM_LEASE + timedelta(seconds=1)  # inside SNS's five minutes

    assert detector(deployment, arn, None, now).run(bundle(STOP)).exit_code() == detect.EXIT_OK
    messages = received(queue)
    assert sorted(m["eventID"] for m in messages) == sorted(e["eventID"] for e in events)


def test_two_runs_never_both_send_a_finding(deployment, topic, monkeypatch):
    """B sends everything while A holds a page it read before: A's claims fail (409)."""
    settings = deployment[0]
    arn, queue = topic
    load(settings, [event("StopLogging", n, datetime(2024, 5, 1, tzinfo=timezone.utc))
                    for n in range(7)])
    recorder = detector(deployment, arn)
    monkeypatch.setattr(recorder.outbox, "deliver", findings.Delivery)  # recorded, left pending
    assert recorder.run(bundle(STOP)).exit_code() == detect.EXIT_OK
    assert set(ledger(deployment).values()) == {findings.PENDING}
    a, b = (findings.Outbox(deployment[1], deployment[2], f"{settings.index_prefix}_findings",
                            boto3.client("sns"), arn) for _ in range(2))
    real_claim = a._claim

    def claim_after_b(page: Any, delivery: Any) -> Any:
        assert b.deliver().sent == 7
        return real_claim(page, delivery)

    monkeypatch.setattr(a, "_claim", claim_after_b)
    delivery = a.deliver()

    assert delivery.sent == 0 and delivery.errors == [] and delivery.unsent == 0
    assert len(received(queue)) == 7


def test_findings_recorded_without_a_topic_are_never_sent_later(deployment, topic):
    settings = deployment[0]
    arn, queue = topic
    load(settings, [event("StopLogging", 1, datetime(2024, 5, 1, tzinfo=timezone.utc))])
    assert detector(deployment).run(bundle(STOP)).findings == 1
    later = detector(deployment, arn).run(bundle(STOP), detect.Window(
        datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2025, 1, 1, tzinfo=timezone.utc)))
    assert later.findings == 1 and later.new == 0 and later.delivery.sent == 0
    assert received(queue) == [] and set(ledger(deployment).values()) == {findings.NONE}


# -- Positions --------------------------------------------------------------------------------

def positions(deployment, scope: str) -> dict[str, dict[str, Any]]:
    settings = deployment[0]
    url = f"{settings.es_url}/{settings.index_prefix}_findings_state"
    requests.post(f"{url}/_refresh", timeout=30)
    hits = requests.post(f"{url}/_search", timeout=30, json={
        "size": 100, "query": {"term": {"scope": scope}}}).json().get("hits", {}).get("hits", [])
    return {hit["_source"]["rule_id"]: hit["_source"] for hit in hits}


def test_a_refused_rule_keeps_its_position_and_the_others_advance(deployment):
    settings = deployment[0]
    load(settings, [event("StopLogging", 1, datetime(2024, 5, 1, tzinfo=timezone.utc)),
                    event("CreateAccessKey", 2, datetime(2024, 5, 1, tzinfo=timezone.utc))])
    run = detector(deployment).run(bundle(STOP, REFUSED, KEYS))

    assert run.exit_code() == detect.EXIT_FAILED
    assert [rule.rule_id for rule in run.failed] == ["rule-refused"]
    assert "HTTP 400" in run.failed[0].error
    assert run.summary()["per_rule"] == {"rule-stop-logging": 1, "rule-refused": 0,
                                         "rule-access-key": 1}
    saved = positions(deployment, detect.SCHEDULE_SCOPE)
    assert saved["rule-refused"]["window_end"] is None and saved["rule-refused"]["failing_since"]
    assert saved["rule-stop-logging"]["window_end"] and not saved["rule-stop-logging"]["failing_since"]

    late = event("StopLogging", 3, datetime(2023, 1, 1, tzinfo=timezone.utc))  # arrives years late
    load(settings, [late])
    again = detector(deployment).run(bundle(STOP, REFUSED, KEYS))
    found = {r.rule_id: r for r in again.rules}
    assert found["rule-stop-logging"].findings == 1 and found["rule-stop-logging"].new == 1
    assert found["rule-stop-logging"].window.start == detect.parse_time(
        saved["rule-stop-logging"]["window_end"])
    assert found["rule-access-key"].findings == 0 and found["rule-refused"].error


def test_manual_and_explicit_runs_never_move_the_schedule(deployment, monkeypatch, tmp_path):
    settings = deployment[0]
    monkeypatch.setenv("DETECTION_DELAY_MINUTES", "0")
    load(settings, [event("StopLogging", 1, datetime(2024, 5, 1, tzinfo=timezone.utc))])
    assert detector(deployment).run(bundle(STOP)).findings == 1
    schedule = positions(deployment, detect.SCHEDULE_SCOPE)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"format": 1, "rules": [STOP, KEYS]}))

    assert detect.main([str(rules), "--json"]) == detect.EXIT_OK
    assert detect.main([str(rules), "--json", "--from", "2024-01-01T00:00:00Z",
                        "--to", "2025-01-01T00:00:00Z"]) == detect.EXIT_OK
    assert detect.main([str(rules), "--json", "--by-arrival", "--from",
                        "2024-01-01T00:00:00Z"]) == detect.EXIT_OK

    assert positions(deployment, detect.SCHEDULE_SCOPE) == schedule
    assert set(positions(deployment, detect.MANUAL_SCOPE)) == {"rule-stop-logging", "rule-access-key"}


def test_a_rule_behind_the_catch_up_bound_resumes_from_it_and_says_what_was_not_checked(deployment):
    settings = deployment[0]
    store = detect.Store(deployment[1], deployment[2], settings.index_prefix)
    now = datetime.now(timezone.utc)
    old = detect.RulePosition(window_end=now - timedelta(days=10), failing_since=now - timedelta(days=10),
                              last_error="refused")
    store.save_position(detect.SCHEDULE_SCOPE, STOP["id"], old, now)

    run = detector(deployment, catch_up_hours=24).run(bundle(STOP))

    [rule] = run.rules
    assert rule.gap is not None and detect.iso(rule.gap[0]) == detect.iso(old.window_end)
    assert abs((rule.window.start - (now - timedelta(hours=24))).total_seconds()) < 60
    assert run.summary()["not_checked"][STOP["id"]][0] == detect.iso(old.window_end)
    assert not positions(deployment, detect.SCHEDULE_SCOPE)[STOP["id"]]["failing_since"]


# -- Bounded work -----------------------------------------------------------------------------

def test_the_cap_stops_a_rule_and_the_next_runs_pick_up_the_rest(deployment, topic, monkeypatch):
    settings = deployment[0]
    arn, queue = topic
    events = [event("StopLogging", n, datetime(2024, 5, 1, tzinfo=timezone.utc)) for n in range(25)]
    load(settings, events, distinct_arrivals=True, monkeypatch=monkeypatch)
    monkeypatch.setattr(detect, "PAGE_SIZE", 4)  # pages of 4: paging is exercised too
    counts = []
    for _ in range(4):
        run = detector(deployment, arn, max_findings=10).run(bundle(STOP))
        assert run.exit_code() == detect.EXIT_OK, run.summary()
        counts.append((run.rules[0].findings, run.rules[0].capped))

    assert counts == [(10, True), (10, True), (5, False), (0, False)]
    messages = received(queue)
    assert sorted(m["eventID"] for m in messages) == sorted(e["eventID"] for e in events)


def test_search_contexts_are_released_when_a_run_stops_midway(deployment, monkeypatch):
    settings, cluster, _ = deployment
    load(settings, [event("StopLogging", n, datetime(2024, 5, 1, tzinfo=timezone.utc))
                    for n in range(9)])
    monkeypatch.setattr(detect, "PAGE_SIZE", 2)
    sent: list[tuple[str, str]] = []
    real = cluster.request
    monkeypatch.setattr(cluster, "request", lambda method, path, *a, **k: (
        sent.append((method, path)), real(method, path, *a, **k))[1])
    store = detect.Store(cluster, deployment[2], settings.index_prefix)
    window = detect.Window(datetime(2024, 1, 1, tzinfo=timezone.utc),
                           datetime(2025, 1, 1, tzinfo=timezone.utc))
    hits = store.hits(STOP["query"], window, store.monthly_indexes())
    assert len([next(hits) for _ in range(3)]) == 3
    hits.close()

    released = "/_pit" if detect.pages_by_pit(deployment[2]) else "/_search/scroll"
    assert sent[-1] == ("DELETE", released)


# -- Scope ------------------------------------------------------------------------------------

def test_another_deployment_whose_prefix_extends_ours_is_never_searched(deployment, opensearch_url):
    settings = deployment[0]
    other = settings.index_prefix + "-org"
    try:
        load(settings, [event("StopLogging", 1, datetime(2024, 5, 1, tzinfo=timezone.utc))])
        load(settings, [event("StopLogging", 2, datetime(2024, 5, 1, tzinfo=timezone.utc))],
             index=f"{other}-2024-05")
        requests.put(f"{opensearch_url}/{other}_findings/_doc/x?refresh=true", timeout=30,
                     json={"eventName": "StopLogging", "event": {"ingested": findings.iso(
                         datetime.now(timezone.utc))}}).raise_for_status()

        run = detector(deployment).run(bundle(STOP))

        assert run.findings == 1
        indexes = {hit for hit in ledger_indexes(deployment)}
        assert indexes == {f"{settings.index_prefix}-2024-05"}
        other_findings = requests.post(f"{opensearch_url}/{other}_findings/_count", timeout=30).json()
        assert other_findings["count"] == 1
    finally:
        requests.delete(f"{opensearch_url}/{other}-*,{other}_*", timeout=60)


def ledger_indexes(deployment) -> list[str]:
    settings = deployment[0]
    url = f"{settings.es_url}/{settings.index_prefix}_findings"
    requests.post(f"{url}/_refresh", timeout=30)
    hits = requests.post(f"{url}/_search", timeout=30, json={"size": 100}).json()["hits"]["hits"]
    return [hit["_source"]["index"] for hit in hits]


def test_a_findings_index_of_an_earlier_version_gets_the_notification_fields(deployment, topic):
    settings = deployment[0]
    arn, queue = topic
    old_mapping = {"dynamic": False, "properties": {"rule_id": {"type": "keyword"},
                                                    "detected_at": {"type": "date"}}}
    requests.put(f"{settings.es_url}/{settings.index_prefix}_findings", timeout=30, json={
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": old_mapping}).raise_for_status()
    load(settings, [event("StopLogging", 1, datetime(2024, 5, 1, tzinfo=timezone.utc))])

    run = detector(deployment, arn).run(bundle(STOP))

    assert run.exit_code() == detect.EXIT_OK, run.summary()
    assert run.delivery.sent == 1 and len(received(queue)) == 1


def test_one_event_under_two_indexes_is_one_finding_sent_once(deployment, topic):
    """A file delivered twice, its event under two months' indexes: both hits share a finding id,
    in one ``_bulk`` request; the first is created, the second is "there already"."""
    settings = deployment[0]
    arn, queue = topic
    twice = event("StopLogging", 1, datetime(2024, 5, 31, 23, 59, tzinfo=timezone.utc))
    load(settings, [twice])
    load(settings, [twice], index=f"{settings.index_prefix}-2024-06")

    run = detector(deployment, arn).run(bundle(STOP))

    assert run.exit_code() == detect.EXIT_OK, run.failed
    assert (run.findings, run.new) == (2, 1)
    assert list(ledger(deployment)) == [detect.finding_id(STOP["id"], twice["eventID"])]
    assert [m["eventID"] for m in received(queue)] == [twice["eventID"]]
