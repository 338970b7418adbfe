"""SigV4: a proxy in front of the real OpenSearch recomputes every signature with botocore."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from faultproxy import is_bulk_path
from support import moto_source, search

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.processor import ObjectRef, create_processor, process_objects

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = pytest.mark.generated_trail_only

KEY, SECRET, TOKEN, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok/en=", "eu-west-1"


def expected_signature(method, path, headers, body, secret=SECRET, token=TOKEN, service="es"):
    """The signature botocore computes for what was received (signed headers only)."""
    authorization = headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].strip().split(";")
    request = AWSRequest(method=method, url=f"http://{headers['Host']}{path}", data=body,
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials(KEY, secret, token), service, REGION)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


def received_signature(headers):
    return headers["Authorization"].rsplit("Signature=", 1)[1]


class VerifyingProxy(ThreadingHTTPServer):
    def __init__(self, upstream, service="es"):
        self.upstream, self.service = upstream, service
        self.seen = []  # (method, path, headers, body, verified)
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def _any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = self.headers  # case-insensitive, as HTTP header names are
        ok = "Authorization" in headers and received_signature(headers) == expected_signature(
            self.command, self.path, headers, body, service=self.server.service)
        self.server.seen.append((self.command, self.path, headers, body, ok))
        if not ok:
            self.send_response(403)
            self.end_headers()
            return
        upstream = requests.request(self.command, self.server.upstream + self.path, data=body,
                                    headers={name: headers[name] for name in
                                             ("Content-Type", "Content-Encoding") if headers[name]},
                                    timeout=120)
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_PUT = do_POST = do_HEAD = _any

    def log_message(self, *args):
        pass


@pytest.fixture(params=["es", "aoss"])
def proxy(request, opensearch_url):
    """A domain (service es) and, with the real OpenSearch standing in, a Serverless
    collection (service aoss: no GET /, mappings-only index bodies, no compression)."""
    server = VerifyingProxy(opensearch_url, request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()



def test_every_request_carries_a_signature_botocore_agrees_with(
        proxy, monkeypatch, index_prefix, corpus_files, opensearch_url, moto_url):
    for name, value in (("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", SECRET),
                        ("AWS_SESSION_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings = Settings.from_env({"ES_HOSTNAME": proxy.url, "AWS_REGION": REGION,
                                  "ES_SERVICE": proxy.service},
                                 index_prefix=index_prefix, index_replicas=0)
    assert settings.auth == "sigv4" and settings.sigv4_service == proxy.service
    source, bucket = moto_source(moto_url, corpus_files[:3])
    processor = create_processor(settings, source=source)

    run = process_objects(processor, [ObjectRef(bucket, k) for k, _ in corpus_files[:3]],
                          lambda: 1e12)

    assert not run.failed and run.total("indexed") == run.total("events_read") > 0
    methods = {(method, path.split("?")[0].rsplit("/", 1)[-1]) for method, path, *_ in proxy.seen}
    assert ("POST", "_bulk") in methods and any(m == "PUT" for m, _ in methods)
    assert all(ok for *_, ok in proxy.seen)
    assert all(h["X-Amz-Security-Token"] == TOKEN for _, _, h, _, _ in proxy.seen)
    bulk = [(h, body) for method, path, h, body, _ in proxy.seen if is_bulk_path(path)]
    assert bulk and all(h["x-amz-content-sha256"] for h, _ in bulk)
    if proxy.service == "es":
        # _bulk bodies went gzipped, and the signature covers the compressed bytes.
        assert all(h["Content-Encoding"] == "gzip" and body[:2] == b"\x1f\x8b" for h, body in bulk)
        assert ("GET", "/") in {(m, p) for m, p, *_ in proxy.seen}
    else:
        assert all(not h["Content-Encoding"] for h, _ in bulk)
        assert all(p not in ("/", ) and "_cluster" not in p for _, p, *_ in proxy.seen)
        creates = [b for m, p, h, b, _ in proxy.seen if m == "PUT" and "/_mapping" not in p]
        assert creates and all(list(json.loads(body)) == ["mappings"] for body in creates)
        declared = [b for m, p, h, b, _ in proxy.seen if m == "PUT" and "/_mapping" in p]
        assert all(list(json.loads(body)) == ["properties"] for body in declared)  # new fields
    assert search(opensearch_url, index_prefix, {"match_all": {}})

    # The check can fail: the same request does not verify under another secret or body.
    method, path, headers, body, _ = next(s for s in proxy.seen if s[0] == "POST")
    assert received_signature(headers) != expected_signature(method, path, headers, body,
                                                             secret="wrong")
    assert received_signature(headers) != expected_signature(method, path, headers, body + b" ")
