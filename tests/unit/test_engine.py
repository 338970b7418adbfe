import json

import pytest

from cloudtrail_es.write.bulk import bulk_item
from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.engine import Engine, detect
from cloudtrail_es.core.errors import ClusterError
from cloudtrail_es.write.indexes import index_body


class Answer:
    def __init__(self, status, body):
        self.status_code, self._body, self.text = status, body, json.dumps(body)

    def json(self):
        return self._body


class Answers:
    def __init__(self, **by_path):
        self.by_path, self.asked = by_path, []

    def request(self, method, path, body=None, **kwargs):
        self.asked.append(path)
        return self.by_path[path]


@pytest.mark.parametrize("root,expected", [
    ({"version": {"number": "2.19.6", "distribution": "opensearch"}}, ("opensearch", (2, 19, 6))),
    ({"version": {"number": "7.10.2", "build_flavor": "oss"}}, ("elasticsearch", (7, 10, 2))),
    ({"version": {"number": "6.8.23"}}, ("elasticsearch", (6, 8, 23))),
    ({"version": {"number": "8.19.0-SNAPSHOT"}}, ("elasticsearch", (8, 19, 0))),
])
def test_detects_distribution_and_version_from_the_root(root, expected):
    engine = detect(Answers(**{"/": Answer(200, root)}))
    assert (engine.distribution, engine.version) == expected


def test_minimal_elasticsearch_without_a_root_endpoint_is_read_from_nodes():
    cluster = Answers(**{"/": Answer(405, {"error": "Incorrect HTTP method"}),
                         "/_nodes/_local?filter_path=nodes.%2A.version":
                             Answer(200, {"nodes": {"n1": {"version": "8.19.0"}}})})
    assert detect(cluster) == Engine("elasticsearch", (8, 19, 0))


def test_refused_credentials_say_so():
    with pytest.raises(ClusterError, match="refused our credentials"):
        detect(Answers(**{"/": Answer(401, {"error": "security_exception"})}))


def test_serverless_asks_nothing():
    cluster = Answers()
    assert detect(cluster, serverless=True, accepts_ids=False) == Engine("serverless", (), False)
    assert cluster.asked == []


def test_elasticsearch_6_names_the_mapping_type_everywhere():
    engine = Engine("elasticsearch", (6, 8, 23))
    body = engine.index_body(index_body(1, 0))
    assert list(body["mappings"]) == ["_doc"]
    assert body["mappings"]["_doc"]["properties"]["eventTime"]["type"] == "date"
    action = json.loads(bulk_item("i", "id1", {}, 0, engine.doc_type).lines.split(b"\n")[0])
    assert action == {"index": {"_index": "i", "_type": "_doc", "_id": "id1"}}


@pytest.mark.parametrize("engine", [Engine("elasticsearch", (7, 17)), Engine("opensearch", (1, 3)),
                                    Engine("elasticsearch", (8, 19))])
def test_typeless_engines(engine):
    assert engine.doc_type is None and engine.index_body(index_body(1, 0)) == index_body(1, 0)


def test_serverless_sends_only_mappings_and_no_ids_for_time_series():
    engine = Engine("serverless", accepts_ids=False)
    assert engine.index_body(index_body(1, 0)) == {"mappings": index_body(1, 0)["mappings"]}
    action = json.loads(bulk_item("i", "id1", {}, 0, None, engine.accepts_ids).lines.split(b"\n")[0])
    assert action == {"index": {"_index": "i"}}
    assert not engine.supports_compression


def test_serverless_is_recognised_by_host_or_setting():
    aoss = Settings.from_env({"ES_HOSTNAME": "abc123.eu-west-1.aoss.amazonaws.com",
                              "AWS_REGION": "eu-west-1", "AOSS_COLLECTION": "timeseries"})
    assert aoss.sigv4_service == "aoss" and aoss.serverless and not aoss.client_ids
    forced = Settings.from_env({"ES_HOSTNAME": "https://proxy.example:8443", "ES_SERVICE": "aoss",
                                "AWS_REGION": "eu-west-1"})
    assert forced.serverless and forced.client_ids
    assert not Settings.from_env({"ES_HOSTNAME": "search-x.eu-west-1.es.amazonaws.com",
                                  "AWS_REGION": "eu-west-1"}).serverless


def test_api_key_basic_and_tls_settings():
    s = Settings.from_env({"ES_HOSTNAME": "https://h:9200", "ES_API_KEY": "k",
                           "ES_CA_CERTS": "/ca.pem"})
    assert (s.auth, s.api_key, s.ca_certs, s.verify_certs) == ("apikey", "k", "/ca.pem", True)
    s = Settings.from_env({"ES_HOSTNAME": "https://h:9200", "ES_USERNAME": "elastic",
                           "ES_PASSWORD": "p", "ES_VERIFY_CERTS": "false"})
    assert (s.auth, s.verify_certs) == ("basic", False)
