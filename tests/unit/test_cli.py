"""The backfill command, main(argv), with the scripted cluster injected and files on local disk."""
import gzip
import json

import pytest

import fakes
from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import redrive
from cloudtrail_es.commands import retention


def run(argv, cluster, capsys):
    code = cli.main(argv, cluster=cluster)
    out = capsys.readouterr()
    return code, (json.loads(out.out.splitlines()[-1]) if "--json" in argv and out.out else None), out.err


def test_a_directory_loads_and_exits_0(trail_dir, capsys):
    cluster = fakes.ScriptedCluster()

    code, summary, _ = run(["--dir", str(trail_dir), "--json", "--quiet"], cluster, capsys)

    assert code == cli.EXIT_OK
    assert (summary["files_loaded"], summary["events_read"], summary["indexed"]) == (2, 3, 3)
    assert {doc_id for _, doc_id in cluster.documents} == {"a", "b", "c"}
    # What the run reports indexed is searchable when it ends: its indexes are refreshed.
    assert cluster.refreshed == sorted({index for index, _ in cluster.documents})


def test_a_corrupt_file_fails_alone_and_exits_1(trail_dir, capsys):
    (trail_dir / fakes.log_key("CorruptGzip0001")).write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    cluster = fakes.ScriptedCluster()

    code, summary, err = run(["--dir", str(trail_dir), "--json", "--quiet"], cluster, capsys)

    assert code == cli.EXIT_FILES_FAILED
    assert summary["files_loaded"] == 2 and summary["failed"][0]["key"].endswith("CorruptGzip0001.json.gz")
    assert "FAILED" in err and "corrupt gzip" in err


def test_rejected_events_go_to_the_dead_letter_dir_and_exit_3(trail_dir, env, capsys):
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, doc: 400 if doc_id == "b" else None)
    dead_dir = env / "dead"

    code, summary, err = run(["--dir", str(trail_dir), "--json", "--quiet", "--dead-letter-dir",
                              str(dead_dir)], cluster, capsys)

    assert code == cli.EXIT_DEAD_LETTERED and summary["dead_lettered"] == 1
    [path] = dead_dir.rglob("*.ndjson.gz")
    [record] = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert record["doc_id"] == "b" and "DEAD-LETTERED 1 events" in err


def test_redrive_sends_dead_letters_again_through_the_protocol(monkeypatch, capsys):
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(), cluster)
    store = fakes.MemoryDeadLetters()
    store.put("k", [{"index": "ct-2024-01", "bucket": "b", "key": "k", "doc_id": "x~1",
                     "event": fakes.event("x"), "reason": "r"},
                    {"index": "ct-2024-01", "bucket": "b", "key": "k", "doc_id": "big",
                     "event_head": "{...", "reason": "event too large"}])
    [name] = list(store.files())

    counts = redrive.redrive_file(processor, store, name, deadline=100)

    assert counts == {"events": 2, "indexed": 1, "degraded": 0, "foreign_index": 0, "still_dead": 1}
    assert ("ct-2024-01", "x~1") in cluster.documents
    assert [r["doc_id"] for r in store.read(name)] == ["big"]


@pytest.mark.parametrize("variable, value", [("LOG_LEVEL", "LOUD"), ("RETRY_LIMIT_SECONDS", "soon"),
                                             ("INDEX_SHARDS", "one")])
def test_a_bad_setting_exits_2_naming_the_variable(trail_dir, monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)

    code = cli.main(["--dir", str(trail_dir), "--quiet"] if variable != "LOG_LEVEL" else
                    ["--dir", str(trail_dir)], cluster=fakes.ScriptedCluster())

    assert code == cli.EXIT_USAGE and variable in capsys.readouterr().err


def test_dry_run_lists_and_loads_nothing(trail_dir, capsys):
    cluster = fakes.ScriptedCluster()

    code, summary, _ = run(["--dir", str(trail_dir), "--dry-run", "--json"], cluster, capsys)

    assert code == cli.EXIT_OK and summary["files"] == 2 and summary["indexes"] == {"ct-2024-01": 2}
    assert cluster.requests == []


def test_via_queue_sends_one_message_per_file(env, capsys):
    class Listing:
        def get_paginator(self, name):
            return self

        def paginate(self, **kwargs):
            return [{"Contents": [{"Key": fakes.log_key("GoodFileNumber1"), "Size": 10},
                                  {"Key": "AWSLogs/readme.txt", "Size": 1}]}]

    class Sqs:
        sent = []

        def send_message_batch(self, QueueUrl, Entries):
            self.sent += [json.loads(e["MessageBody"]) for e in Entries]
            return {"Successful": [{"Id": e["Id"]} for e in Entries]}

    sqs = Sqs()
    code = cli.main(["bucket", "AWSLogs/", "--via-queue", "https://queue", "--json"],
                    s3_client=Listing(), sqs_client=sqs)

    assert code == cli.EXIT_OK
    [message] = sqs.sent
    assert message["Records"][0]["s3"]["bucket"]["name"] == "bucket"
    assert json.loads(capsys.readouterr().out)["files_enqueued"] == 1


def test_retention_command_reads_months_from_the_environment_once(monkeypatch, capsys, env):
    monkeypatch.setenv("RETENTION_MONTHS", "-1")
    assert retention.main(["--dry-run"]) == cli.EXIT_USAGE
    assert "RETENTION_MONTHS" in capsys.readouterr().err
