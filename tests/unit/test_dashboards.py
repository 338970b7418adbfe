"""The index-pattern command's request. No Dashboards or Kibana server can be installed on
these machines (neither is published to a registry they reach), so a recording server stands
in for the saved objects API; the request it checks is the documented one."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cloudtrail_es.commands import dashboards

SAVED_OBJECTS = Path(dashboards.__file__).with_name("saved_objects.ndjson")


class Recorder(ThreadingHTTPServer):
    def __init__(self, status=200):
        self.status, self.seen = status, []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, dict(self.headers), json.loads(body)))
        payload = b'{"id": "x"}' if self.server.status == 200 else b'{"statusCode": 403}'
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    servers = []

    def start(status=200):
        server = Recorder(status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("kibana,header", [(False, "osd-xsrf"), (True, "kbn-xsrf")])
def test_creates_the_index_pattern_with_event_time(recorder, monkeypatch, capsys, kibana, header):
    server = recorder()
    monkeypatch.setenv("ES_HOSTNAME", "http://127.0.0.1:1")
    monkeypatch.setenv("ES_AUTH", "none")
    monkeypatch.setenv("INDEX_PREFIX", "audit")
    url = f"http://127.0.0.1:{server.server_address[1]}"

    assert dashboards.main(["--url", url] + (["--kibana"] if kibana else [])) == 0

    [(path, headers, body)] = server.seen
    assert path == "/api/saved_objects/index-pattern/audit-index-pattern?overwrite=true"
    assert headers[header] == "true"
    assert body == {"attributes": {"title": "audit-*", "timeFieldName": "eventTime"}}


def test_a_refusal_is_reported(recorder, monkeypatch, capsys):
    server = recorder(status=403)
    monkeypatch.setenv("ES_HOSTNAME", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ES_AUTH", "none")
    assert dashboards.main([]) == 2
    assert "HTTP 403" in capsys.readouterr().err
    assert server.seen[0][0].startswith("/_dashboards/api/saved_objects/index-pattern/")


def test_the_importable_file_matches_the_command():
    [saved] = [json.loads(line) for line in SAVED_OBJECTS.read_text().splitlines()]
    object_id, attributes = dashboards.index_pattern("cloudtrail")
    assert (saved["id"], saved["type"], saved["attributes"]) == (object_id, "index-pattern", attributes)


class _PageHandler(BaseHTTPRequestHandler):
    """A web server that is not Dashboards: an HTML page (200) or a 404 for every request."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        payload = b"<html>hello</html>"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def web_page():
    servers = []

    def start(status):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
        server.status = status
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture()
def no_cluster_env(monkeypatch):
    monkeypatch.delenv("ES_HOSTNAME", raising=False)
    monkeypatch.setenv("ES_AUTH", "none")
    monkeypatch.setenv("INDEX_PREFIX", "audit")


def test_url_alone_suffices(recorder, no_cluster_env, capsys):
    server = recorder()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    assert dashboards.main(["--url", url]) == 0

    assert json.loads(capsys.readouterr().out) == {"index_pattern": "audit-index-pattern", "url": url}
    assert len(server.seen) == 1


@pytest.mark.parametrize("status, why", [(200, "not JSON"), (404, "HTTP 404")])
def test_a_server_that_is_not_dashboards_is_named_plainly(web_page, no_cluster_env, capsys, status, why):
    url = web_page(status)

    assert dashboards.main(["--url", url]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert f"no OpenSearch Dashboards saved objects API answers at {url}" in line and why in line
    assert "--url" in line


def test_nothing_listening_is_named_plainly(no_cluster_env, capsys):
    unused = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    port = unused.server_address[1]
    unused.server_close()

    assert dashboards.main(["--url", f"http://127.0.0.1:{port}", "--kibana"]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert f"no Kibana saved objects API answers at http://127.0.0.1:{port}" in line
    assert "Traceback" not in line


@pytest.mark.parametrize("es_url, kibana, url", [
    ("https://search-x.es.amazonaws.com", False, "https://search-x.es.amazonaws.com/_dashboards"),
    ("http://127.0.0.1:9200", True, "http://127.0.0.1:5601"),
    ("https://es.example.internal", True, "https://es.example.internal:5601"),
])
def test_the_documented_default_urls(es_url, kibana, url):
    assert dashboards.default_url(es_url, kibana) == url


def test_kibana_without_url_goes_to_kibanas_port(monkeypatch, capsys):
    monkeypatch.setenv("ES_HOSTNAME", "http://127.0.0.1:1")
    monkeypatch.setenv("ES_AUTH", "none")
    assert dashboards.main(["--kibana"]) == 2
    assert "at http://127.0.0.1:5601 " in capsys.readouterr().err
