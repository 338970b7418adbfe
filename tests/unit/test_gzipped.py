"""gzip in and out, by ISA-L when installed and by zlib without it: the same format both ways."""
import gzip
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.core import gzipped


def inflate(data: bytes) -> bytes:
    inflater = gzipped.inflater()
    return inflater.decompress(data) + inflater.flush()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=20_000) | st.text(max_size=5_000).map(str.encode))
def test_what_it_compresses_any_gzip_reader_reads_and_what_gzip_writes_it_reads(data):
    assert gzip.decompress(gzipped.compress(data)) == data
    assert inflate(gzip.compress(data, 9)) == data
    assert inflate(gzipped.compress(data)) == data


def test_corrupt_data_raises_its_error():
    with pytest.raises(gzipped.Error):
        inflate(gzip.compress(b"x")[:10] + b"\x07" + b"\x00" * 20)  # reserved block type


def test_the_library_in_use_is_isal_when_installed_and_zlib_without_it():
    pytest.importorskip("isal", reason="isal is a runtime dependency; install it to test its use")
    assert gzipped.LIBRARY == "isal"
    without = subprocess.run(
        [sys.executable, "-c",
         "import sys, gzip; sys.modules['isal'] = None\n"
         "from cloudtrail_es.core import gzipped\n"
         "data = b'{\"Records\":[]}' * 1000\n"
         "assert gzip.decompress(gzipped.compress(data)) == data\n"
         "i = gzipped.inflater(); assert i.decompress(gzip.compress(data)) == data\n"
         "print(gzipped.LIBRARY, gzipped.Error.__module__)"],
        capture_output=True, text=True, check=True)
    assert without.stdout.split() == ["zlib", zlib.error.__module__]
