"""The backfill as a new user meets it: wrong input never reports success, bad
settings are one line and exit 2 before any work, summaries say what happened, Ctrl-C twice
keeps what was loaded. The scripted cluster is injected; files are on local disk."""
import argparse
import json
import logging
from concurrent.futures import ALL_COMPLETED

import pytest

import fakes
from cloudtrail_es.core.results import FileResult
from cloudtrail_es.backfill import run as backfill
from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import common as commands
from cloudtrail_es.core import config
from cloudtrail_es.core.errors import ConfigurationError
from cloudtrail_es.write.processor import create_processor
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.core.retry import Backoff


def summary_of(out):
    return json.loads(out.splitlines()[-1])


# 1. Wrong input never reports success

def test_a_directory_without_cloudtrail_files_is_a_usage_error_naming_what_was_searched(env, capsys):
    empty = env / "mirror"
    (empty / "AWSLogs").mkdir(parents=True)
    (empty / "AWSLogs" / "readme.txt").write_text("not a log")
    cluster = fakes.ScriptedCluster()

    code = cli.main(["--dir", str(empty), "--json"], cluster=cluster)

    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and cluster.bulk == [] and cluster.indexes == set()
    assert f"no CloudTrail log file in directory {empty}" in err and "1 other objects" in err


def test_filters_that_select_nothing_are_named(trail_dir, capsys):
    code = cli.main(["--dir", str(trail_dir), "--dates", "2023-01-01", "2023-01-31",
                     "--regions", "ap-south-1"], cluster=fakes.ScriptedCluster())

    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert "--dates 2023-01-01 2023-01-31" in err and "--regions ap-south-1" in err


def test_a_dry_run_that_selects_nothing_is_a_usage_error_too(env, capsys):
    (env / "nothing").mkdir()
    assert cli.main(["--dir", str(env / "nothing"), "--dry-run"]) == cli.EXIT_USAGE
    assert "no CloudTrail log file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dir", "/no/such/dir"], "--dir /no/such/dir: no such directory"),
    (["--dir", ".", "--dates", "2024-02-01", "2024-01-01"], "START is after END"),
    (["--dir", ".", "--log-level", "loud"], "--log-level"),
    (["--dir", ".", "--retry-limit", "-1"], "--retry-limit -1"),
])
def test_a_wrong_option_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.parse_args(argv)
    assert exit.value.code == cli.EXIT_USAGE and message in capsys.readouterr().err


def test_everything_already_done_warns_and_loads_nothing(trail_dir, env, capsys):
    state = env / "state"
    assert cli.main(["--dir", str(trail_dir), "--state", str(state), "--quiet"],
                    cluster=fakes.ScriptedCluster()) == cli.EXIT_OK
    capsys.readouterr()
    cluster = fakes.ScriptedCluster()

    code = cli.main(["--dir", str(trail_dir), "--state", str(state), "--json"], cluster=cluster)

    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK and summary_of(out)["files_done_before"] == 2
    assert "every file selected was skipped" in err and cluster.bulk == []


# 2. Every setting checked before any work: one line, exit 2

BAD_SETTINGS = [
    ("LOG_LEVEL", "bogus"), ("RETRY_LIMIT_SECONDS", "soon"), ("RETRY_LIMIT_SECONDS", "-5"),
    ("RETENTION_MONTHS", "twelve"), ("RETENTION_MONTHS", "-1"), ("INDEX_SHARDS", "0"),
    ("INDEX_REPLICAS", "-1"), ("INDEX_PREFIX", ""), ("INDEX_SHARDS", "one"),
    ("BULK_MAX_DOCS", "many"), ("MAX_EVENT_BYTES", "0"), ("ES_AUTH", "magic"),
    ("ES_VERIFY_CERTS", "maybe"), ("ES_SERVICE", "lambda"), ("ES_HOSTNAME", "127.0.0.1:9200"),
    ("ES_COMPRESS_REQUESTS", "perhaps"),
]


#: Settings a run that talks to no cluster (dry run, --output) does not read.
CLUSTER_ONLY = ("ES_AUTH", "ES_VERIFY_CERTS", "ES_SERVICE", "ES_HOSTNAME")


@pytest.mark.parametrize("variable, value, mode", [
    (variable, value, mode) for mode in ([], ["--dry-run"], ["--output", "OUT"])
    for variable, value in BAD_SETTINGS if not (mode and variable in CLUSTER_ONLY)])
def test_a_bad_setting_is_one_line_and_exit_2_before_any_work(trail_dir, env, monkeypatch, capsys, variable, value, mode):
    monkeypatch.setenv(variable, value)
    cluster = fakes.ScriptedCluster()
    argv = ["--dir", str(trail_dir)] + [str(env / a) if a == "OUT" else a for a in mode]

    code = cli.main(argv, cluster=cluster)

    out, err = capsys.readouterr()
    assert code == cli.EXIT_USAGE, err
    [line] = err.splitlines()
    assert line.startswith("bulk_upload: ") and variable in line and "Traceback" not in err
    assert cluster.requests == [] and out == "" and not (env / "OUT").exists()


def test_offline_runs_do_not_need_the_cluster_settings(trail_dir, env, monkeypatch, capsys):
    for name in ("ES_HOSTNAME", "ES_AUTH"):
        monkeypatch.delenv(name)
    assert cli.main(["--dir", str(trail_dir), "--dry-run", "--json"]) == cli.EXIT_OK
    assert summary_of(capsys.readouterr().out)["files"] == 2


@pytest.mark.parametrize("hostname, url", [
    ("search-x.eu-west-1.es.amazonaws.com", "https://search-x.eu-west-1.es.amazonaws.com"),
    ("search-x.eu-west-1.es.amazonaws.com:443", "https://search-x.eu-west-1.es.amazonaws.com:443"),
    ("http://127.0.0.1:9200/", "http://127.0.0.1:9200"),
    ("https://localhost:9200", "https://localhost:9200"),
])
def test_hostnames_that_say_what_they_mean_are_kept(hostname, url):
    assert config.base_url(hostname) == url


@pytest.mark.parametrize("hostname", ["127.0.0.1:9200", "localhost:9200", "es.internal:9243",
                                      "host:port"])
def test_a_scheme_less_host_and_port_is_refused_with_the_rule(hostname):
    with pytest.raises(ConfigurationError) as refused:
        config.base_url(hostname)
    assert "ES_HOSTNAME" in str(refused.value) and "http://" in str(refused.value)
    assert "bare host name" in str(refused.value)


@pytest.mark.parametrize("level", ["debug", "Info", "WARNING"])
def test_log_level_is_accepted_in_any_case(trail_dir, capsys, level):
    assert cli.main(["--dir", str(trail_dir), "--log-level", level, "--quiet"],
                    cluster=fakes.ScriptedCluster()) == cli.EXIT_OK


# 3. On a terminal: the bar and warnings; per-file lines when asked, or to --log-file

def logging_args(**values):
    return argparse.Namespace(**{"log_level": None, "log_file": None, **values})


def test_a_terminal_gets_warnings_only_unless_a_level_is_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    commands.start_logging(logging_args(), terminal=True)
    assert logging.getLogger().level == logging.WARNING
    commands.start_logging(logging_args(log_level="INFO"), terminal=True)
    assert logging.getLogger().level == logging.INFO
    commands.start_logging(logging_args(), terminal=False)
    assert logging.getLogger().level == logging.INFO
    monkeypatch.setenv("LOG_LEVEL", "debug")
    commands.start_logging(logging_args(), terminal=True)
    assert logging.getLogger().level == logging.DEBUG


def test_a_log_file_gets_the_per_file_lines_and_the_terminal_the_warnings(trail_dir, env, capsys):
    log_file = env / "run.log"

    assert cli.main(["--dir", str(trail_dir), "--log-file", str(log_file), "--quiet"],
                    cluster=fakes.ScriptedCluster()) == cli.EXIT_OK

    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert sum(1 for line in logged if line["message"] == "file loaded") == 2
    assert "file loaded" not in capsys.readouterr().err


@pytest.mark.parametrize("elapsed, done, text", [
    (0.5, 0.5, "--"), (30.0, 0.01, "--"), (4.9, 0.9, "--"), (10.0, 0.5, "0m10s"),
    (60.0, 0.25, "3m00s"), (1.0, 1.0, "0m00s"),
])
def test_no_eta_until_enough_is_done(elapsed, done, text):
    assert backfill.eta_text(elapsed, done) == text


# 4. A second Ctrl-C keeps the files already finished

class GroupProcessor:
    """Each group loads at once; the files' results say which they were."""

    def process_files(self, refs, deadline):
        return [FileResult(ref.bucket, ref.key, "ct-2024-01", events_read=1, indexed=1) for ref in refs]


def test_a_second_interrupt_during_the_wind_down_still_writes_the_finished_files(tmp_path, monkeypatch):
    monkeypatch.setattr(backfill, "GROUP_FILES", 2)
    real_wait = backfill.wait
    interrupts = []

    def ctrl_c_twice(futures, return_when):
        real_wait(futures, return_when=ALL_COMPLETED)  # every group has finished by now
        interrupts.append(return_when)
        raise KeyboardInterrupt

    monkeypatch.setattr(backfill, "wait", ctrl_c_twice)
    refs = [ObjectRef("b", fakes.log_key(f"File{n:011d}"), 10) for n in range(6)]
    state = backfill.StateFile(tmp_path / "state")

    run, interrupted = backfill.run_parallel(GroupProcessor(), refs, 4, lambda: 0.0, state)

    assert interrupted and len(interrupts) == 2
    assert len(run.loaded) == 6
    assert {json.loads(line) for line in (tmp_path / "state").read_text().splitlines()} \
        == {f"b/{ref.key}" for ref in refs}


def test_an_interrupt_in_the_middle_of_a_group_loses_none_of_it(tmp_path, monkeypatch):
    monkeypatch.setattr(backfill, "GROUP_FILES", 3)

    class CtrlCOnSecondFile(backfill.Progress):
        def add(self, ref, events=0, failed=False):
            super().add(ref, events, failed)
            if self.files == 2:
                raise KeyboardInterrupt

    refs = [ObjectRef("b", fakes.log_key(f"File{n:011d}"), 10) for n in range(3)]
    state = backfill.StateFile(tmp_path / "state")

    run, interrupted = backfill.run_parallel(GroupProcessor(), refs, 1, lambda: 0.0, state,
                                             CtrlCOnSecondFile(3, 30, enabled=False))

    assert interrupted and [r.key for r in run.loaded] == [ref.key for ref in refs]
    assert len((tmp_path / "state").read_text().splitlines()) == 3


# 5. Truthful summaries

def test_a_file_that_failed_after_retries_says_how_many(trail_dir, env):
    clock = [0.0]
    backoff = Backoff(base=1.0, cap=4.0, sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                      clock=lambda: clock[0], jitter=lambda: 1.0)
    cluster = fakes.ScriptedCluster(*[429] * 50)
    processor = create_processor(fakes.settings(), cluster=cluster, source=fakes.MemorySource(
        {fakes.log_key("Throttled000001"): fakes.trail_file([fakes.event("x")])}), backoff=backoff)

    run, _ = backfill.run_parallel(processor, [ObjectRef("b", fakes.log_key("Throttled000001"))], 1,
                                   lambda: clock[0] + 20)

    [failure] = run.failed
    assert failure.retried == len(cluster.bulk) - 1 > 2
    assert run.summary()["retried"] == failure.retried and run.summary()["files_failed"] == 1


def test_files_with_dead_lettered_events_are_not_counted_as_loaded(trail_dir, env, capsys):
    cluster = fakes.ScriptedCluster(reject=lambda doc_id, doc: 400 if doc_id == "c" else None)

    code = cli.main(["--dir", str(trail_dir), "--json", "--quiet", "--dead-letter-dir",
                     str(env / "dead")], cluster=cluster)

    summary = summary_of(capsys.readouterr().out)
    assert code == cli.EXIT_DEAD_LETTERED
    assert (summary["files_loaded"], summary["files_dead_lettered"], summary["dead_lettered"]) == (1, 1, 1)


def test_output_index_bodies_honour_shards_and_replicas(trail_dir, env, monkeypatch, capsys):
    monkeypatch.setenv("INDEX_SHARDS", "3")
    monkeypatch.setenv("INDEX_REPLICAS", "2")

    assert cli.main(["--dir", str(trail_dir), "--output", str(env / "out"), "--quiet"]) == cli.EXIT_OK

    body = json.loads((env / "out" / "ct-2024-01.index.json").read_text())
    assert (body["settings"]["index"]["number_of_shards"],
            body["settings"]["index"]["number_of_replicas"]) == (3, 2)
