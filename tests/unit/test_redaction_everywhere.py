"""No credential in any output: generated secrets put in every setting, every channel searched.

Channels: stdout (summaries, the Lambda's EMF records), stderr (usage lines, JSON logs), the
dead-letter files, and the exception the Lambda raises for its runtime to report. The
secrets are registered from the environment before anything is checked, so a refusal of the
first setting read cannot quote them either.
"""
import gzip
import json
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import fakes
from cloudtrail_es.aws import handler as routes
from cloudtrail_es.backfill import cli
from cloudtrail_es.commands import redrive
from cloudtrail_es.core import config, redact
from cloudtrail_es.core.logs import configure_logging
from cloudtrail_es.write.deadletter import LocalDeadLetters

#: Characters a password may hold that a URL's userinfo takes as they are, plus a few that
#: must be percent-encoded there (the decoded and the written forms are both secrets).
secrets = st.text(string.ascii_letters + string.digits + "!$*()-_=+~.%&'", min_size=8, max_size=24)

#: Every setting the code reads except those that decide which credentials are used.
OTHER_SETTINGS = sorted({value for name, value in vars(config).items()
                         if name.isupper() and isinstance(value, str) and value.isupper()
                         and "_" in value} - {"ES_HOSTNAME", "ES_AUTH", "ES_USERNAME", "ES_PASSWORD",
                                              "ES_API_KEY", "AWS_REGION"})

#: ES_HOSTNAME spellings that are refused, each quoting the value back.
BAD_HOSTNAMES = ["admin:{}@127.0.0.1:9200", "https://admin:{}@[::1", "http://admin:{}@host:99999",
                 "ftp://admin:{}@host", "admin:{}@"]


def leaked(secret, *texts):
    """The texts that show the secret, as written or percent-encoded."""
    forms = {secret, quote(secret, safe="")}
    return [text for text in texts if any(form in text for form in forms)]


def clear(monkeypatch):
    for variable in config.__dict__.values():
        if isinstance(variable, str) and variable.isupper():
            monkeypatch.delenv(variable, raising=False)


@pytest.fixture()
def trail_dir(tmp_path):
    (tmp_path / "logs" / fakes.DAY).mkdir(parents=True)
    (tmp_path / "logs" / fakes.log_key("Redacted00001")).write_bytes(
        fakes.trail_file([fakes.event("r1")]))
    return tmp_path / "logs"


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets, variable=st.sampled_from(OTHER_SETTINGS), command=st.sampled_from(["load", "redrive"]))
def test_a_password_pasted_into_any_setting_is_never_shown(
        monkeypatch, capsys, trail_dir, secret, variable, command):
    clear(monkeypatch)
    monkeypatch.setenv("ES_HOSTNAME", "http://127.0.0.1:9")
    monkeypatch.setenv("ES_AUTH", "basic")
    monkeypatch.setenv("ES_USERNAME", "admin")
    monkeypatch.setenv("ES_PASSWORD", secret)
    monkeypatch.setenv(variable, f"x{secret}")  # refused, or taken: either way never shown
    run = (lambda: cli.main(["--dir", str(trail_dir), "--json", "--dead-letter-dir",
                             str(trail_dir.parent / "dead")])) if command == "load" else (
        lambda: redrive.main([str(trail_dir)]))
    exit_code = run()
    out, err = capsys.readouterr()
    assert exit_code != cli.EXIT_OK
    assert not leaked(secret, out, err)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets, hostname=st.sampled_from(BAD_HOSTNAMES))
def test_a_password_in_a_refused_hostname_is_never_shown(monkeypatch, capsys, trail_dir, secret, hostname):
    clear(monkeypatch)
    monkeypatch.setenv("ES_HOSTNAME", hostname.format(secret))
    assert cli.main(["--dir", str(trail_dir), "--json"]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert "ES_HOSTNAME=" in err and "Traceback" not in err
    assert not leaked(secret, out, err)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets, hostname=st.sampled_from(BAD_HOSTNAMES + ["http://admin:{}@127.0.0.1:9"]))
def test_the_lambda_shows_no_password_in_its_exception_logs_or_metrics(
        monkeypatch, capsys, secret, hostname):
    clear(monkeypatch)
    monkeypatch.setenv("ES_HOSTNAME", hostname.format(secret))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    routes.processor.cache_clear()
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": fakes.log_key("Redacted00001")}}}]}
    batch = {"Records": [{"eventSource": "aws:sqs", "messageId": "m1",
                          "body": json.dumps(notification)}]}
    try:
        with pytest.raises(Exception) as raised:
            routes.lambda_handler(batch, fakes.LambdaContext())
    finally:
        routes.processor.cache_clear()
    out, err = capsys.readouterr()
    assert "m1" in str(raised.value)
    assert not leaked(secret, str(raised.value), repr(raised.value.args), out, err)


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=secrets)
def test_a_cluster_answer_quoting_a_secret_reaches_neither_dead_letters_nor_logs(
        tmp_path_factory, capsys, secret):
    redact.register_environment({"ES_API_KEY": secret})  # as an entry point does, first
    configure_logging("INFO")
    echoed = (400, {"type": "mapper_parsing_exception", "reason": f"failed to parse [{secret}]"})
    cluster = fakes.ScriptedCluster({"r1": echoed}, {"r1": echoed})
    directory = tmp_path_factory.mktemp("dead")
    processor = fakes.processor_for(
        fakes.MemorySource({fakes.log_key("Redacted00001"): fakes.trail_file([fakes.event("r1")])}),
        cluster, LocalDeadLetters(directory))

    result = processor.process_file("b", fakes.log_key("Redacted00001"), 1e12)

    assert result.dead_lettered == 1
    [stored] = directory.rglob("*.ndjson.gz")
    text = gzip.decompress(stored.read_bytes()).decode("utf-8")
    assert "failed to parse [***]" in text
    out, err = capsys.readouterr()
    assert not leaked(secret, text, out, err)
