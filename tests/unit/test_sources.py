import gzip
import json

import pytest

from cloudtrail_es.core.errors import BadLogFile
from cloudtrail_es.read.decoder import events_in

RECORDS = {"Records": [{"eventID": "1"}, {"eventID": "2"}]}


def test_reads_gzipped_and_plain_files_by_magic_bytes():
    plain = json.dumps(RECORDS).encode()
    assert events_in(gzip.compress(plain)) == RECORDS["Records"]
    assert events_in(plain) == RECORDS["Records"]


@pytest.mark.parametrize("data,message", [
    (gzip.compress(b'{"Records": [{"eventID": "1"}]}')[:-12], "corrupt gzip"),
    (b"\x1f\x8bnot gzip at all", "corrupt gzip"),
    (b'{"Records": [{"eventID": "1"}', "not valid JSON"),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b'{"something": "else"}', "no top-level \"Records\" array"),
    (b'[1, 2, 3]', "no top-level \"Records\" array"),
    (b'{"Records": [1, 2]}', "element is not an object"),
    # Valid JSON however deep parsed, then refused for its shape.
    (b"[" * 100_000 + b"]" * 100_000, "no top-level \"Records\" array"),
    (b"[" * 100_000 + b"]" * 99_999, "not valid JSON"),
])
def test_bad_files_raise_one_clear_error(data, message):
    with pytest.raises(BadLogFile, match=message):
        events_in(data)


def many_events(n):
    return [{"eventID": f"id-{i}", "eventName": "Sign", "nested": {"x": [i, "é", {"y": None}]},
             "text": "brace } and bracket ] inside a string"} for i in range(n)]


@pytest.mark.parametrize("spacing", [(",", ":"), (", ", ": ")])
def test_streams_large_files_in_small_windows_with_the_same_result(monkeypatch, spacing):
    from cloudtrail_es.read import decoder

    monkeypatch.setattr(decoder, "READ_SIZE", 4096)
    events = many_events(3000)
    data = gzip.compress(json.dumps({"Records": events}, separators=spacing).encode())
    assert list(decoder.iter_events(data)) == events
    assert list(decoder.iter_events(b'  {\n "Records" : [ ] }\n')) == []


def test_a_file_cut_short_fails_after_the_events_before_the_cut(monkeypatch):
    from cloudtrail_es.read import decoder

    monkeypatch.setattr(decoder, "READ_SIZE", 4096)
    text = json.dumps({"Records": many_events(500)})
    seen = []
    with pytest.raises(BadLogFile, match="not valid JSON"):
        for event in decoder.iter_events(text[: len(text) // 2].encode()):
            seen.append(event)
    assert 100 < len(seen) < 500


@pytest.mark.parametrize("text,message", [
    ('{"Records": [{"a": 1}] , "more": 1}', "unexpected content after"),
    ('{"Records": [{"a": 1} {"b": 2}]}', "expected ',' or ']'"),
    ('{"Records": [{"a": 1}, 7]}', "element is not an object"),
])
def test_malformed_records_arrays(text, message):
    with pytest.raises(BadLogFile, match=message):
        events_in(text.encode())
