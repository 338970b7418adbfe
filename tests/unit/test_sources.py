import gzip
import json

import pytest

from cloudtrail_es.errors import BadLogFile
from cloudtrail_es.sources import events_in

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
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
])
def test_bad_files_raise_one_clear_error(data, message):
    with pytest.raises(BadLogFile, match=message):
        events_in(data)
