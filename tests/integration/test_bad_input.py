"""Each kind of bad input gives one clear error naming the object; its siblings still land."""
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

import boto3
import pytest
import requests
from support import refresh

from cloudtrail_es.core.config import Settings
from cloudtrail_es.write.processor import ObjectRef, create_processor, process_objects

DAY = "AWSLogs/111122223333/CloudTrail/eu-west-1/2024/01/15/"


def key(name):
    return f"{DAY}111122223333_CloudTrail_eu-west-1_20240115T0910Z_{name}.json.gz"


def records(*ids):
    return gzip.compress(json.dumps({"Records": [
        {"eventID": i, "eventName": "GetObject", "eventTime": "2024-01-15T09:10:00Z"}
        for i in ids]}).encode())


class DenyingS3(ThreadingHTTPServer):
    """moto in front of which one object answers 403 AccessDenied, as a bucket policy would."""

    def __init__(self, upstream, denied_path):
        self.upstream, self.denied_path = upstream, denied_path
        super().__init__(("127.0.0.1", 0), _Relay)


class _Relay(BaseHTTPRequestHandler):
    def _any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.command == "GET" and self.path.split("?")[0] == self.server.denied_path:
            payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                       b"<Message>Access Denied</Message></Error>")
            status, headers = 403, {"Content-Type": "application/xml"}
        else:
            answer = requests.request(self.command, self.server.upstream + self.path, data=body,
                                      headers={k: v for k, v in self.headers.items()
                                               if k.lower() != "host"}, timeout=60)
            payload, status = answer.content, answer.status_code
            headers = {k: v for k, v in answer.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding",
                                            "connection", "content-encoding")}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

    def log_message(self, *args):
        pass


@pytest.fixture()
def denying_s3(moto_url, bucket):
    server = DenyingS3(moto_url, f"/{bucket}/{quote(key('AccessDenied0001'))}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_each_bad_file_names_its_key_and_reason_while_siblings_land(
        opensearch_url, index_prefix, s3, bucket, denying_s3):
    plain = json.dumps({"Records": [{"eventID": "x"}]}).encode()
    bad = {
        key("CorruptGzip0001"): (b"\x1f\x8b\x08\x00" + b"\x00" * 40, "corrupt gzip"),
        key("TruncatedJson01"): (gzip.compress(plain[:-9]), "not valid JSON"),
        key("NotJsonAtAll001"): (gzip.compress(b"<html>hello</html>"), "not valid JSON"),
        key("NotCloudTrail01"): (gzip.compress(b'{"Records": "no", "x": 1}'),
                                 "no top-level \"Records\" array"),
        key("AccessDenied0001"): (records("denied-1"), "AccessDenied"),
        key("Glacier00000001"): (records("glacier-1"), "InvalidObjectState"),
    }
    good = {key("GoodFileNumber1"): records("good-1", "good-2"),
            key("GoodFileNumber2"): records("good-3")}
    for name, (data, _) in bad.items():
        s3.put_object(Bucket=bucket, Key=name, Body=data,
                      StorageClass="GLACIER" if "Glacier" in name else "STANDARD")
    for name, data in good.items():
        s3.put_object(Bucket=bucket, Key=name, Body=data)
    missing = key("DeletedMeanwhile")
    order = [*bad, missing, *good]
    processor = create_processor(
        Settings(es_url=opensearch_url, auth="none", index_prefix=index_prefix,
                 index_replicas=0), s3_client=denying_s3)

    run = process_objects(processor, [ObjectRef(bucket, k) for k in order],
                          lambda: time.monotonic() + 30)

    reasons = {f.key: str(f) for f in run.failed}
    assert set(reasons) == {*bad, missing}
    for name, (_, why) in bad.items():
        assert reasons[name].startswith(f"s3://{bucket}/{name}: ") and why in reasons[name]
    assert "NoSuchKey" in reasons[missing]
    assert [r.key for r in run.loaded] == list(good)
    refresh(opensearch_url, index_prefix)
    ids = {h["_id"] for h in requests.get(f"{opensearch_url}/{index_prefix}-*/_search",
                                          timeout=30).json()["hits"]["hits"]}
    assert ids == {"good-1", "good-2", "good-3"}
