"""State, redrive, export and INDEX_PREFIX against hostile input, on the real OpenSearch and moto."""
import gzip
import json
import uuid
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import fakes
from support import ids_by_index

from cloudtrail_es.backfill import cli
from cloudtrail_es.write import deadletter
from cloudtrail_es.core import names
from cloudtrail_es.commands import redrive
from cloudtrail_es.commands import retention

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

EVENT = json.loads((Path(__file__).resolve().parents[1] / "events" / "transform"
                    / "run_instances.input.json").read_text())
NAME = "111122223333_CloudTrail_eu-west-1_20240115T0910Z_Safe{n:07d}.json.gz"
DIR = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"


def trail_file(tag, count=2):
    return fakes.trail_file(fakes.copies(EVENT, count, tag))


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def test_a_key_with_a_newline_does_not_mark_another_file_done(
        loader_env, opensearch_url, tmp_path, capsys):
    root = tmp_path / "logs"
    victim = DIR + NAME.format(n=1)
    # Written raw, this file's state line would read as two: ".../evil" and "<root>/<victim>".
    spoof = f"{DIR}evil\n{root}/{victim}"
    (root / spoof).parent.mkdir(parents=True)
    (root / spoof).write_bytes(trail_file("spoof"))
    state = tmp_path / "state"
    assert cli.main(["--dir", str(root), "--json", "--state", str(state)]) == cli.EXIT_OK
    assert len(state.read_text().splitlines()) == 1 and json.loads(state.read_text()) == f"{root}/{spoof}"

    (root / victim).write_bytes(trail_file("victim"))
    capsys.readouterr()
    assert cli.main(["--dir", str(root), "--json", "--state", str(state)]) == cli.EXIT_OK
    summary = last_json(capsys.readouterr().out)
    assert (summary["files_done_before"], summary["files_loaded"]) == (1, 1)
    assert {"victim-000", "victim-001", "spoof-000", "spoof-001"} <= set(ids_by_index(opensearch_url, loader_env))


@pytest.mark.parametrize("content", [f"/logs/{DIR}{NAME.format(n=1)}\n", '"ok"\n{"not": "a string"}\n'])
def test_a_corrupt_or_old_state_file_stops_before_anything_loads(
        loader_env, opensearch_url, tmp_path, capsys, content):
    (tmp_path / "logs" / DIR).mkdir(parents=True)
    (tmp_path / "logs" / DIR / NAME.format(n=1)).write_bytes(trail_file("x"))
    state = tmp_path / "state"
    state.write_text(content)
    assert cli.main(["--dir", str(tmp_path / "logs"), "--json", "--state", str(state)]) == cli.EXIT_USAGE
    assert "corrupt at line" in capsys.readouterr().err
    assert requests.get(f"{opensearch_url}/{loader_env}-*/_count", timeout=30).json().get("count", 0) == 0
    assert state.read_text() == content


def write_dead_letter(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(deadletter.encode(records))


def dead_record(tag, index, key):
    event = json.loads(json.dumps(EVENT))
    event["eventID"] = tag
    return deadletter.record(reason="test", status=400, error={}, bucket="b", key=key, index=index,
                             doc_id=tag, event=event)


def test_redrive_skips_a_corrupt_file_and_writes_only_to_our_indexes(
        loader_env, opensearch_url, tmp_path, capsys):
    outsider = f"zz{uuid.uuid4().hex[:10]}"
    log_key = DIR + NAME.format(n=2)
    dead = tmp_path / "dead"
    (dead / "2024").mkdir(parents=True)
    (dead / "2024" / "a-garbage.ndjson.gz").write_bytes(b"\x1f\x8b not gzip at all")
    (dead / "2024" / "b-not-records.ndjson.gz").write_bytes(gzip.compress(b'[1, 2]\n{"event": 3}\n'))
    write_dead_letter(dead / "2024" / "c-hostile.ndjson.gz", [
        # The source file names the month: the record's index is ignored.
        dead_record("hostile-path", f"{outsider}/_doc/y", log_key),
        dead_record("hostile-dots", "../", log_key),
        # No source file name to go by, and an index not ours: never sent, kept.
        dead_record("hostile-kept", f"../{outsider}", "not/a/log/file"),
        dead_record("foreign-kept", f"{outsider}-2024-01", "not/a/log/file"),
        # No source file name, but one of our indexes: sent there.
        dead_record("ours", f"{loader_env}-2023-12", "not/a/log/file"),
    ])
    write_dead_letter(dead / "2024" / "d-good.ndjson.gz", [dead_record("good", "whatever", log_key)])

    assert redrive.main([str(dead)]) == cli.EXIT_FILES_FAILED
    captured = capsys.readouterr()
    totals = last_json(captured.out)
    assert "a-garbage.ndjson.gz: " in captured.err and "b-not-records.ndjson.gz: " in captured.err
    assert (totals["files"], totals["files_failed"], totals["indexed"], totals["foreign_index"],
            totals["still_dead"]) == (2, 2, 4, 2, 2)
    assert ids_by_index(opensearch_url, loader_env) == {
        "hostile-path": f"{loader_env}-2024-01", "hostile-dots": f"{loader_env}-2024-01",
        "good": f"{loader_env}-2024-01", "ours": f"{loader_env}-2023-12"}
    assert requests.get(f"{opensearch_url}/_cat/indices/{outsider}*?format=json", timeout=30).json() == []
    assert not (dead / "2024" / "d-good.ndjson.gz").exists()
    kept = deadletter.decode((dead / "2024" / "c-hostile.ndjson.gz").read_bytes())
    assert {r["doc_id"] for r in kept} == {"hostile-kept", "foreign-kept"}
    assert (dead / "2024" / "a-garbage.ndjson.gz").exists()  # left for a human to look at


@pytest.mark.parametrize("prefix", ["CloudTrail", "a/b", "x/_doc/y", "_x", "..", "a b", "a:b", "a,b"])
def test_a_bad_index_prefix_is_a_usage_error_naming_the_rule(
        loader_env, corpus_dir, monkeypatch, tmp_path, capsys, prefix):
    monkeypatch.setenv("INDEX_PREFIX", prefix)
    for run in (lambda: cli.main(["--dir", str(corpus_dir), "--json"]),
                lambda: cli.main(["--dir", str(corpus_dir), "--dry-run"]),
                lambda: cli.main(["--dir", str(corpus_dir), "--output", str(tmp_path / "out")]),
                lambda: redrive.main([str(tmp_path)]),
                lambda: retention.main(["--months", "2", "--dry-run"])):
        assert run() == cli.EXIT_USAGE
        assert "INDEX_PREFIX must be lowercase" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Lu", "Lt")), min_size=1, max_size=20))
def test_every_prefix_we_accept_makes_indexes_the_cluster_accepts(opensearch_url, prefix):
    try:
        names.validate_prefix(prefix)
    except Exception:
        return
    index = f"{prefix}-2024-01"
    url = f"{opensearch_url}/{names.segment(index)}"
    created = requests.put(url, json={"settings": {"number_of_replicas": 0}}, timeout=60)
    try:
        assert created.status_code == 200, created.text
        assert created.json()["index"] == index
    finally:
        requests.delete(url, timeout=60)


@pytest.fixture()
def mixed_dir(tmp_path):
    """A log file, a digest file and a foreign object, as `aws s3 sync` leaves them."""
    root = tmp_path / "logs"
    (root / DIR).mkdir(parents=True)
    (root / DIR / NAME.format(n=3)).write_bytes(trail_file("export"))
    digest = root / "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2024/01/15"
    digest.mkdir(parents=True)
    (digest / "111122223333_CloudTrail-Digest_eu-west-1_t_eu-west-1_20240115T091000Z.json.gz"
     ).write_bytes(gzip.compress(b"{}"))
    (root / DIR / "notes.txt").write_text("not a log file")
    return root


def test_dry_run_and_output_skip_what_a_load_skips(loader_env, mixed_dir, tmp_path, capsys):
    assert cli.main(["--dir", str(mixed_dir), "--dry-run", "--json"]) == cli.EXIT_OK
    dry = last_json(capsys.readouterr().out)
    assert (dry["files"], dry["files_skipped"], dry["indexes"]) == (1, 2, {f"{loader_env}-2024-01": 1})

    out = tmp_path / "out"
    assert cli.main(["--dir", str(mixed_dir), "--output", str(out), "--json"]) == cli.EXIT_OK
    written = last_json(capsys.readouterr().out)
    assert (written["files_written"], written["files_skipped"], written["failed"]) == (1, 2, [])
    [ndjson] = out.rglob("*.ndjson")
    assert ndjson.parent.name == f"{loader_env}-2024-01" and len(ndjson.read_text().splitlines()) == 4
