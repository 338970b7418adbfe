"""Redrive: each dead-letter file in its own boundary, rewritten atomically, always summarised.

Against the real OpenSearch and moto's S3 (an AccessDenied is a bucket policy moto enforces);
a disk full or a Ctrl-C in the middle of a rewrite, which no server produces on demand, is a
fault injected at that write step.
"""
import errno
import json
import os
import uuid
from pathlib import Path

import pytest
from support import ids_by_index

from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import redrive
from cloudtrail_es.write import deadletter

pytestmark = pytest.mark.integration

LOG_KEY = ("AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"
           "111122223333_CloudTrail_eu-west-1_20240115T0910Z_Redrive0000001.json.gz")


def record(doc_id, key=LOG_KEY, index="cloudtrail-2024-01"):
    return deadletter.record(reason="earlier refusal", status=400, error=None, bucket="trail",
                             key=key, index=index, doc_id=doc_id,
                             event={"eventVersion": "1.08", "eventID": doc_id, "eventName": "Test",
                                    "eventTime": "2024-01-15T09:10:00Z"})


def summary_of(out):
    totals = json.loads(out.strip().splitlines()[-1])
    assert totals["events"] == (totals["indexed"] + totals["degraded"] + totals["still_dead"]
                                + totals["events_failed"])
    return totals


def deny(s3, bucket, action, key):
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": action,
        "Resource": f"arn:aws:s3:::{bucket}/{key}"}]}))


@pytest.mark.parametrize("action", ["s3:DeleteObject", "s3:GetObject"])
def test_an_access_denied_fails_that_file_alone_and_the_summary_names_it(
        loader_env, opensearch_url, s3, action, capsys):
    dead = f"dead-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=dead)
    for name in "abc":
        s3.put_object(Bucket=dead, Key=f"rejected/{name}.ndjson.gz",
                      Body=deadletter.encode([record(f"{name}-1"), record(f"{name}-2")]))
    deny(s3, dead, action, "rejected/b.ndjson.gz")

    exit_code = redrive.main([f"s3://{dead}/rejected/"])

    captured = capsys.readouterr()
    totals = summary_of(captured.out)
    assert exit_code == cli.EXIT_FILES_FAILED
    [error] = totals["errors"]
    assert error["file"] == "rejected/b.ndjson.gz" and "403" in error["error"]
    assert "FAILED rejected/b.ndjson.gz" in captured.err
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=dead).get("Contents", [])]
    assert left == ["rejected/b.ndjson.gz"]  # a and c redriven and removed, b untouched
    landed = set(ids_by_index(opensearch_url, loader_env))
    assert {"a-1", "a-2", "c-1", "c-2"} <= landed
    if action == "s3:DeleteObject":  # b's events landed; only its removal was refused
        assert {"b-1", "b-2"} <= landed
        assert (totals["files"], totals["events"], totals["indexed"], totals["events_failed"]) == (2, 6, 6, 0)
    else:  # b could not be read: none of its events is counted, none was sent
        assert not {"b-1", "b-2"} & landed
        assert (totals["files"], totals["events"], totals["indexed"]) == (2, 4, 4)


def test_a_location_that_does_not_exist_is_a_usage_error(loader_env, s3, tmp_path, capsys):
    assert redrive.main([str(tmp_path / "dead-leter")]) == cli.EXIT_USAGE
    assert "no such directory" in capsys.readouterr().err
    assert redrive.main([f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/rejected/"]) == cli.EXIT_USAGE
    assert "cannot list the dead-letter files" in capsys.readouterr().err


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("step, fault", [
    ("write", _disk_full),      # the new content cannot be written out
    ("fsync", _disk_full),      # nor made durable
    ("replace", _interrupted),  # Ctrl-C just before the rename
    ("replace", _disk_full),
])
def test_a_rewrite_cut_short_leaves_the_file_as_it_was(
        loader_env, opensearch_url, tmp_path, monkeypatch, capsys, step, fault):
    directory = tmp_path / "dead"
    (directory / "2024").mkdir(parents=True)
    path = directory / "2024" / "kept.ndjson.gz"
    # One record lands, one stays (its index is not ours): the file must be rewritten.
    records = [record("lands"), record("stays", key="not/a/log/file", index="someone-elses")]
    path.write_bytes(deadletter.encode(records))
    original = path.read_bytes()
    if step == "write":
        real_open = Path.open

        def failing_open(self, mode="r", *args, **kwargs):
            handle = real_open(self, mode, *args, **kwargs)
            if "w" in mode and self.name.endswith(".partial"):
                handle.write = _disk_full
            return handle
        monkeypatch.setattr(Path, "open", failing_open)
    else:
        monkeypatch.setattr(deadletter.os, step, fault)

    if fault is _interrupted:
        with pytest.raises(KeyboardInterrupt):
            redrive.main([str(directory)])
    else:
        assert redrive.main([str(directory)]) == cli.EXIT_FILES_FAILED

    captured = capsys.readouterr()
    totals = summary_of(captured.out)  # printed, even for a Ctrl-C
    assert path.read_bytes() == original and deadletter.decode(path.read_bytes()) == records
    assert sorted(os.listdir(path.parent)) == ["kept.ndjson.gz"]  # no partial file left behind
    if fault is not _interrupted:
        [error] = totals["errors"]
        assert error["file"] == str(path)
    assert (totals["events"], totals["indexed"], totals["events_failed"]) == (2, 1, 1)
    assert "lands" in ids_by_index(opensearch_url, loader_env)


def test_a_removal_refused_leaves_the_file_and_goes_on(loader_env, opensearch_url, tmp_path,
                                                     monkeypatch, capsys):
    directory = tmp_path / "dead"
    directory.mkdir()
    for name in "ab":
        (directory / f"{name}.ndjson.gz").write_bytes(deadletter.encode([record(f"rm-{name}")]))
    real_unlink = Path.unlink

    def refuse_a(self, *args, **kwargs):
        if self.name == "a.ndjson.gz":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)
    monkeypatch.setattr(Path, "unlink", refuse_a)

    assert redrive.main([str(directory)]) == cli.EXIT_FILES_FAILED

    totals = summary_of(capsys.readouterr().out)
    assert [e["file"] for e in totals["errors"]] == [str(directory / "a.ndjson.gz")]
    assert "PermissionError" in totals["errors"][0]["error"]
    assert sorted(os.listdir(directory)) == ["a.ndjson.gz"]
    assert {"rm-a", "rm-b"} <= set(ids_by_index(opensearch_url, loader_env))
