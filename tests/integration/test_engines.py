"""A smoke load of the shared corpus on every engine users run, each a real server.

The primary engine (OpenSearch 2.19) runs the full suite; here each other engine gets
the whole corpus from a local directory, zero rejected events, and the lookups users
rely on. ENGINE_MATRIX (space-separated) overrides the list; an empty one runs none.
Elasticsearch 8.x also runs with security on: HTTPS with its own CA, and an API key.
"""
import gzip
import json
import os
from pathlib import Path

import pytest
import requests


from support import months_by_event, services, trail_files
from cloudtrail_es.backfill import cli

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MATRIX = ("opensearch-1.3.20 opensearch-3.1.0 elasticsearch-6.8.23 "
                  "elasticsearch-7.10.2 elasticsearch-7.17.25 elasticsearch-8.19.0")
MATRIX = os.environ.get("ENGINE_MATRIX", DEFAULT_MATRIX).split()
FIRST_PORT = 9330
#: The Elasticsearch 6.8 of the case-folding test (its transport port is 100 above).
CASE_FOLDING_PORT = int(os.environ.get("CASE_FOLDING_TEST_PORT", "9377"))


def engine_services(action, engine, port, **env):
    return services(action, port, timeout=900, ENGINE=engine, **env)


@pytest.fixture(scope="module", params=[(engine, FIRST_PORT + n) for n, engine in enumerate(MATRIX)],
                ids=lambda p: p[0])
def engine_url(request):
    engine, port = request.param
    engine_services("start", engine, port)
    yield engine, f"http://127.0.0.1:{port}"
    engine_services("stop", engine, port)


def smoke_load(url, prefix, corpus_dir, monkeypatch, capsys, **env):
    for name, value in {"ES_HOSTNAME": url, "ES_AUTH": "none", "INDEX_PREFIX": prefix,
                        "INDEX_REPLICAS": "0", **env}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["--dir", str(corpus_dir), "--json", "--quiet"]) == cli.EXIT_OK
    return json.loads(capsys.readouterr().out)


def check_lookups(url, prefix, summary, corpus_expectations, **kwargs):
    assert summary["events_read"] == summary["indexed"] == len(corpus_expectations)
    assert summary["degraded"] == summary["dead_lettered"] == summary["files_failed"] == 0
    requests.post(f"{url}/{prefix}-*/_refresh", timeout=60, **kwargs).raise_for_status()
    count = requests.get(f"{url}/{prefix}-*/_count", timeout=60, **kwargs).json()["count"]
    assert count == len(corpus_expectations)
    event_id, month = sorted(corpus_expectations.items())[1234]
    hits = requests.post(f"{url}/{prefix}-{month}/_search", timeout=60, json={
        "query": {"term": {"eventID": event_id}}}, **kwargs).json()["hits"]["hits"]
    assert [h["_id"] for h in hits] == [event_id]
    run_instances = requests.post(f"{url}/{prefix}-*/_search", timeout=60, json={
        "query": {"bool": {"filter": [{"term": {"eventName": "RunInstances"}},
                                      {"exists": {"field": "responseElements_flattened.instanceId"}}]}}},
        **kwargs).json()["hits"]["hits"]
    instance = run_instances[0]["_source"]["responseElements_flattened"]["instanceId"][0]
    found = requests.post(f"{url}/{prefix}-*/_search", timeout=60, json={
        "query": {"term": {"responseElements_flattened.instanceId": instance}}},
        **kwargs).json()["hits"]["hits"]
    assert "RunInstances" in {h["_source"]["eventName"] for h in found}


def test_corpus_loads_on_every_engine(engine_url, trails, index_prefix, monkeypatch, capsys):
    """Every trail into one start of each engine (the start is most of the test's time)."""
    engine, url = engine_url
    for n, trail in enumerate(trails):
        prefix = f"{index_prefix}-{n}"
        summary = smoke_load(url, prefix, trail, monkeypatch, capsys)
        check_lookups(url, prefix, summary, months_by_event(trail_files(trail)))
    version = requests.get(f"{url}/_nodes/_local?filter_path=nodes.*.version", timeout=30).json()
    assert list(version["nodes"].values())[0]["version"] == engine.split("-", 1)[1]


def test_elasticsearch_8_with_security_https_basic_auth_and_api_key(
        generated_trail, index_prefix, monkeypatch, capsys):
    """The generated trail only: what is checked is the connection, the data is checked above."""
    corpus_dir, corpus_expectations = generated_trail, months_by_event(trail_files(generated_trail))
    engine, port, password = "elasticsearch-8.19.0", FIRST_PORT + 20, "secret99"
    if engine not in MATRIX:
        pytest.skip(f"{engine} is not in ENGINE_MATRIX")
    engine_services("start", engine, port, ES_SECURITY="true", ES_PASSWORD=password)
    try:
        ca = next((ROOT / ".services").glob(f"{engine}-{port}/config/certs/ca/ca.crt"))
        url = f"https://127.0.0.1:{port}"
        basic = {"auth": ("elastic", password), "verify": str(ca)}
        assert requests.get(f"{url}/_security/_authenticate", timeout=30,
                            verify=str(ca)).status_code == 401
        # Without the CA the certificate is refused: verification is on by default.
        monkeypatch.setenv("ES_HOSTNAME", url)
        monkeypatch.setenv("ES_USERNAME", "elastic")
        monkeypatch.setenv("ES_PASSWORD", password)
        assert cli.main(["--dir", str(corpus_dir), "--json", "--quiet"]) == cli.EXIT_USAGE
        capsys.readouterr()
        monkeypatch.setenv("ES_CA_CERTS", str(ca))
        summary = smoke_load(url, index_prefix, corpus_dir, monkeypatch, capsys,
                             ES_AUTH="basic", ES_CA_CERTS=str(ca))
        check_lookups(url, index_prefix, summary, corpus_expectations, **basic)

        # An API key goes as "Authorization: ApiKey ..."; this minimal distribution cannot
        # issue one (its security index needs the analysis-common module it lacks), so only
        # the refusal of a key it does not know is checked here.
        monkeypatch.delenv("ES_USERNAME")
        monkeypatch.delenv("ES_PASSWORD")
        monkeypatch.setenv("ES_AUTH", "apikey")
        monkeypatch.setenv("ES_API_KEY", "bm90OmEta2V5")
        assert cli.main(["--dir", str(corpus_dir), "--json", "--quiet"]) == cli.EXIT_USAGE
        assert "refused our credentials" in capsys.readouterr().err
    finally:
        engine_services("stop", engine, port)


def case_variants() -> list[dict]:
    """Events that differ from what the modifier rules name only by case, and near misses of
    them, so that a regular expression folding case wrongly finds too much or too little."""
    def event(n, name, source="ec2.amazonaws.com", arn="arn:aws:iam::111122223333:user/alice", **extra):
        return {"eventVersion": "1.08", "eventID": f"case-{n:02d}", "eventTime": "2024-03-05T10:00:00Z",
                "eventName": name, "eventSource": source, "awsRegion": "us-east-1",
                "sourceIPAddress": "198.51.100.7", "recipientAccountId": "111122223333",
                "userIdentity": {"type": "IAMUser", "arn": arn, "accountId": "111122223333"}, **extra}

    open_to_world = {"groupId": "sg-1", "ipPermissions": {"items": [{"ipProtocol": "tcp", "ipRanges": {
        "items": [{"cidrIp": "0.0.0.0/0"}]}}]}}
    names = ["AuthorizeSecurityGroupIngress", "AUTHORIZESECURITYGROUPINGRESS", "authorizeSecurityGroupEgress",
             "DeleteFlowLogs", "deleteflowlogs", "DELETEFLOWLOGSX", "XDeleteFlowLogs", "StopLogging",
             "stoplogging", "STOPLOGGING", "StopLoggingNow", "DeleteTrail", "deletetrail", "DeleteTrails",
             "ConsoleLogin", "consolelogin", "CONSOLELOGIN"]
    events = [event(n, name) for n, name in enumerate(names)]
    events += [event(20, "DeleteFlowLogs", source="EC2.AmazonAWS.com"),
               event(21, "DeleteFlowLogs", source="ec2.amazonaws.comx"),
               event(22, "RunInstances", arn="arn:aws:iam::111122223333:root"),
               event(23, "runinstances", arn="arn:aws:iam::111122223333:Root"),
               event(24, "RunInstances", arn="arn:aws:iam::111122223333:rootx"),
               event(25, "RunInstancesX", arn="arn:aws:iam::111122223333:root"),
               event(26, "AuthorizeSecurityGroupIngress", requestParameters=open_to_world),
               event(27, "AuthorizeSecurityGroupIngress", requestParameters={"note": "0.0.0.0/0"}),
               event(28, "ModifyVpcEndpoint", requestParameters={"IPPERMISSIONS": '"CIDRIP":"0.0.0.0/0"',
                                                                 "cidrIp": "0.0.0.0/0"}),
               event(29, "ConsoleLogin", additionalEventData={"MFAUsed": "No"})]
    return events


def test_sigma_case_folding_on_elasticsearch_6_8(index_prefix, tmp_path, monkeypatch, capsys, moto_url):
    """Elasticsearch before 7.10 has no ``case_insensitive``: the detector folds case into a
    regular expression. Run there, on the real engine, the rules find exactly what plain
    Python finds, case-insensitively, in the same events (OpenSearch runs the same rules with
    ``case_insensitive`` in test_detect.py)."""
    from test_detect import MODIFIER_PREDICATES, MODIFIER_RULES, by_rule, expected_by_rule

    from cloudtrail_es.detections import detect

    engine, port = "elasticsearch-6.8.23", CASE_FOLDING_PORT
    if engine not in MATRIX:
        pytest.skip(f"{engine} is not in ENGINE_MATRIX")
    events = case_variants() + json.loads((ROOT / "tests" / "events" / "sigma" / "crafted.json").read_text())
    key = ("AWSLogs/111122223333/CloudTrail/us-east-1/2024/03/05/"
           "111122223333_CloudTrail_us-east-1_20240305T1000Z_casefold0000001.json.gz")
    (tmp_path / "logs" / key).parent.mkdir(parents=True)
    (tmp_path / "logs" / key).write_bytes(gzip.compress(json.dumps({"Records": events}).encode()))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "modifiers.yml").write_text(MODIFIER_RULES)
    engine_services("start", engine, port)
    try:
        url = f"http://127.0.0.1:{port}"
        summary = smoke_load(url, index_prefix, tmp_path / "logs", monkeypatch, capsys)
        assert summary["indexed"] == len(events) and summary["degraded"] == 0
        requests.post(f"{url}/{index_prefix}-*/_refresh", timeout=60).raise_for_status()
        for name, value in {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("FINDINGS_TOPIC_ARN", raising=False)

        code = detect.main([str(tmp_path / "rules"), "--from", "2000-01-01T00:00:00Z",
                            "--to", "2100-01-01T00:00:00Z", "--json"])
        out, err = capsys.readouterr()
    finally:
        engine_services("stop", engine, port)
    assert code == detect.EXIT_RULES_SKIPPED, err
    assert "SKIPPED aaaaaaaa-0000-4000-8000-000000000002: a case-insensitive regular expression" in err
    expected = expected_by_rule(events, MODIFIER_PREDICATES)
    del expected["aaaaaaaa-0000-4000-8000-000000000002"]
    found = by_rule([json.loads(line) for line in out.splitlines() if line])
    assert all(expected.values()) and {"case-01", "case-08", "case-09", "case-23"} <= set().union(*expected.values())
    assert found == expected
