"""The backfill run and its queue feeder, over the fakes; the one retry loop they share."""
import json

import pytest

import fakes
from cloudtrail_es.backfill import run as backfill
from cloudtrail_es.core.errors import ClusterUnreachable, FileFailed, RetryDeadlineExceeded
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.retry import Backoff, Retry, retrying, transient


def test_run_parallel_loads_every_group_marks_state_and_skips_other_objects(tmp_path, monkeypatch):
    monkeypatch.setattr(backfill, "GROUP_FILES", 2)
    files = {fakes.log_key(f"FileNumber{n:05d}"): fakes.trail_file([fakes.event(f"e{n}")]) for n in range(5)}
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())
    refs = [ObjectRef("b", key, size=10) for key in files] + [ObjectRef("b", "AWSLogs/readme.txt")]
    state = backfill.StateFile(tmp_path / "state")

    run, interrupted = backfill.run_parallel(processor, refs, 2, lambda: 100.0, state)

    assert not interrupted and len(run.loaded) == 5 and [r.key for r in run.skipped] == ["AWSLogs/readme.txt"]
    assert all(ObjectRef("b", key) in state for key in files)
    assert len(cluster.documents) == 5


def test_run_parallel_keeps_failures_out_of_the_state(tmp_path):
    files = {fakes.log_key("GoodFileNumber1"): fakes.trail_file([fakes.event("a")]),
             fakes.log_key("BrokenFile00001"): b"not json"}
    processor = fakes.processor_for(fakes.MemorySource(files), fakes.ScriptedCluster())
    state = backfill.StateFile(tmp_path / "state")

    run, _ = backfill.run_parallel(processor, [ObjectRef("b", k) for k in files], 1, lambda: 100.0, state)

    [failure] = run.failed
    assert isinstance(failure, FileFailed) and "Broken" in failure.key
    assert ObjectRef("b", fakes.log_key("GoodFileNumber1")) in state
    assert ObjectRef("b", failure.key) not in state


class Sqs:
    """SendMessageBatch answering from a script: each call fails the listed entry ids."""

    def __init__(self, *failing):
        self.failing = list(failing)
        self.calls = []

    def send_message_batch(self, QueueUrl, Entries):
        self.calls.append([e["Id"] for e in Entries])
        failing = self.failing.pop(0) if self.failing else {}
        return {"Successful": [{"Id": e["Id"]} for e in Entries if e["Id"] not in failing],
                "Failed": [{"Id": i, "SenderFault": sender, "Code": "x"} for i, sender in failing.items()]}


def refs(n):
    return [ObjectRef("b", fakes.log_key(f"FileNumber{i:05d}")) for i in range(n)]


def test_enqueue_retries_only_the_entries_sqs_failed():
    sleeps = []
    sqs = Sqs({"1": False, "3": False}, {"3": False})

    summary = backfill.enqueue(sqs, "q", refs(12),
                               Backoff(sleep=sleeps.append, clock=lambda: 0.0, jitter=lambda: 1.0))

    assert sqs.calls[:3] == [[str(i) for i in range(10)], ["1", "3"], ["3"]]
    assert summary == {"files_enqueued": 12, "batches": 4, "failed": []} and len(sleeps) == 2


def test_enqueue_gives_up_on_sender_faults_at_once_and_on_the_rest_at_the_deadline():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    sqs = Sqs(*[{"0": True, "1": False}] + [{"1": False}] * 100)
    summary = backfill.enqueue(sqs, "q", refs(2), Backoff(sleep=sleep, clock=lambda: now[0]))

    assert summary["files_enqueued"] == 0
    assert sorted(summary["failed"]) == sorted(r.key for r in refs(2))
    assert now[0] <= backfill.ENQUEUE_RETRY_SECONDS
    assert json.dumps(summary)


def test_retrying_retries_until_an_answer_and_names_what_ran_out():
    answers = [Retry("HTTP 429"), Retry("HTTP 503", "3 documents"), "done"]
    sleeps = []
    backoff = Backoff(sleep=sleeps.append, clock=lambda: 0.0, jitter=lambda: 0.0)
    seen = []

    def attempt(retries):
        seen.append(retries)
        return answers.pop(0)

    assert retrying(attempt, backoff, 10.0, "thing") == "done"
    assert seen == [0, 1, 2] and sleeps == [0.25, 0.5]
    with pytest.raises(RetryDeadlineExceeded, match=r"gave up retrying 3 documents \(HTTP 503\) after 1"):
        retrying(lambda _: Retry("HTTP 503", "3 documents"), backoff, 0.1, "thing")


def test_transient_classifies_statuses_and_silence():
    assert transient(lambda: fakes.Response(429)) == Retry("HTTP 429")
    assert transient(lambda: fakes.Response(504)) == Retry("HTTP 504")
    assert transient(lambda: fakes.Response(400)).status_code == 400

    def unreachable():
        raise ClusterUnreachable("connection refused")

    assert transient(unreachable) == Retry("connection refused")


def test_a_queued_group_gets_its_whole_retry_time_from_when_it_starts(monkeypatch):
    """Groups queued behind a slow one: each deadline counts from the start of its own work."""
    monkeypatch.setattr(backfill, "GROUP_FILES", 1)
    now = [0.0]
    given: list[tuple[float, float]] = []  # (deadline handed to the worker, time it started)

    class SlowProcessor:
        def process_files(self, refs, deadline):
            given.append((deadline, now[0]))
            now[0] += 1000.0  # each group takes far longer than the retry limit
            return [FileFailed("b", ref.key, "not loaded") for ref in refs]

    refs = [ObjectRef("b", fakes.log_key(f"FileNumber{n:05d}"), size=1) for n in range(4)]
    run, _ = backfill.run_parallel(SlowProcessor(), refs, 1, lambda: now[0] + 60.0)

    assert len(run.failed) == 4 and len(given) == 4
    assert [deadline - started for deadline, started in given] == [60.0] * 4


def test_a_ctrl_c_while_a_file_is_taken_counts_it_once_and_writes_its_state(tmp_path, monkeypatch):
    """The Ctrl-C arrives while the first finished file is being taken into the run (its state
    line being written): that file is counted once and has its line, and the run stops as
    interrupted with every file it counts in the state file, once."""
    import os
    import signal

    monkeypatch.setattr(backfill, "GROUP_FILES", 3)
    files = {fakes.log_key(f"FileNumber{n:05d}"): fakes.trail_file([fakes.event(f"e{n}")]) for n in range(6)}
    processor = fakes.processor_for(fakes.MemorySource(files), fakes.ScriptedCluster())
    state = backfill.StateFile(tmp_path / "state")
    mark = state.mark
    pressed = []

    def mark_with_ctrl_c(ref):
        if not pressed:
            pressed.append(ref)
            os.kill(os.getpid(), signal.SIGINT)   # handled at the next bytecode: inside mark
        mark(ref)

    monkeypatch.setattr(state, "mark", mark_with_ctrl_c)
    run, interrupted = backfill.run_parallel(processor, [ObjectRef("b", k) for k in files], 1,
                                             lambda: 100.0, state)
    lines = [json.loads(line) for line in (tmp_path / "state").read_text().splitlines()]
    assert interrupted and pressed
    assert sorted(f"b/{r.key}" for r in run.loaded) == sorted(lines) == sorted(set(lines))
