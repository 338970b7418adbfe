"""The streaming decoder's hard cases: every valid file loads, memory and time bounded."""
import gzip
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.read import decoder
from cloudtrail_es.read.decoder import HEAD_CHARS, OversizedEvent
from cloudtrail_es.core.errors import BadLogFile
from cloudtrail_es.read.decoder import FileTooLarge, events_in, iter_events


def records_file(events, separators=(",", ":")):
    return json.dumps({"Records": events}, separators=separators).encode()


@pytest.fixture()
def small_window(monkeypatch):
    """A 4 KiB window and no whole-file parse, so small files exercise the streaming path."""
    monkeypatch.setattr(decoder, "READ_SIZE", 4096)
    monkeypatch.setattr(decoder, "WHOLE_FILE_BYTES", 0)


@pytest.mark.parametrize("where", [0, 1, 5, 9])
def test_an_event_larger_than_half_the_window_loads_wherever_it_sits(small_window, where):
    events = [{"eventID": str(i), "blob": "x" * (3000 if i == where else 50)} for i in range(10)]
    assert events_in(gzip.compress(records_file(events, (", ", ": ")))) == events


def test_an_event_of_several_windows_past_the_first_loads(small_window):
    events = [{"eventID": "a"}, {"eventID": "big", "blob": "y" * 50_000, "n": [1] * 3000}, {"eventID": "c"}]
    assert events_in(records_file(events)) == events


def test_a_file_bigger_than_the_whole_file_threshold_streams_with_the_same_events(monkeypatch):
    monkeypatch.setattr(decoder, "WHOLE_FILE_BYTES", 1000)
    events = [{"eventID": str(i), "v": {"k": [i, "é", None, 1.5]}} for i in range(200)]
    assert events_in(gzip.compress(records_file(events))) == events


def nested(depth, leaf=1):
    return "[" * depth + json.dumps(leaf) + "]" * depth


@pytest.mark.parametrize("depth", [999, 1000, 1025, 5000, 50_000])
def test_valid_json_nested_deeper_than_the_parsers_allow_loads(depth):
    text = '{"Records":[{"eventID":"deep","requestParameters":' + nested(depth) + '},{"eventID":"next"}]}'
    events = events_in(text.encode())
    assert [event["eventID"] for event in events] == ["deep", "next"]
    value, levels = events[0]["requestParameters"], 0
    while isinstance(value, list):
        value, levels = value[0], levels + 1
    assert (levels, value) == (depth, 1)


def test_deep_nesting_in_a_streamed_file(small_window):
    text = '{"Records":[{"eventID":"a"},{"eventID":"deep","x":' + nested(3000, "s") + "}]}"
    assert [event["eventID"] for event in events_in(text.encode())] == ["a", "deep"]


def test_an_event_over_max_event_bytes_is_traced_not_held_and_decoding_goes_on(small_window):
    events = [{"eventID": "before"}, {"eventID": "huge", "blob": "z" * 20_000}, {"eventID": "after"}]
    decoded = events_in(gzip.compress(records_file(events)), max_event_bytes=10_000)
    assert decoded[0] == events[0] and decoded[2] == events[2]
    trace = decoded[1]
    assert isinstance(trace, OversizedEvent)
    assert trace.size == len(json.dumps(events[1], separators=(",", ":")))
    assert trace.event_id == "huge" and trace.head.startswith('{"eventID":"huge"')
    assert len(trace.head) == HEAD_CHARS


def test_an_oversized_event_inside_the_window_is_traced_too():
    events = [{"eventID": "a", "blob": "q" * 500}, {"eventID": "b"}]
    decoded = events_in(records_file(events), max_event_bytes=100)
    assert isinstance(decoded[0], OversizedEvent) and decoded[0].event_id == "a"
    assert decoded[1] == {"eventID": "b"}


def test_an_oversized_event_with_escapes_split_across_windows(small_window):
    blob = '\\"' * 5000 + "}{][" * 1000
    events = [{"eventID": "esc", "blob": blob}, {"eventID": "b"}]
    decoded = events_in(records_file(events), max_event_bytes=2000)
    assert isinstance(decoded[0], OversizedEvent) and decoded[1] == {"eventID": "b"}
    assert events_in(records_file(events)) == events


def test_a_file_inflating_past_max_file_bytes_fails_with_a_named_error():
    data = gzip.compress(b'{"Records":[' + b" " * 100_000 + b"]}")
    with pytest.raises(FileTooLarge, match="MAX_FILE_BYTES"):
        list(iter_events(data, max_file_bytes=50_000))
    with pytest.raises(FileTooLarge):
        list(iter_events(b'{"Records":[]}' + b" " * 100, max_file_bytes=50))
    assert events_in(data, max_file_bytes=200_000) == []
    assert issubclass(FileTooLarge, BadLogFile)


def test_whitespace_anywhere_is_skipped_across_windows(small_window):
    text = " \n" * 10_000 + '{ "Records" :\t[' + " " * 9000 + '{"eventID":"1"}' + "\r\n" * 5000 \
        + ", " + '{"eventID":"2"}' + " " * 9000 + "] }" + " " * 9000
    assert [e["eventID"] for e in events_in(gzip.compress(text.encode()))] == ["1", "2"]


def test_gzip_members_and_zero_padding_are_all_read():
    first = gzip.compress(b'{"Records":[{"eventID":"1"},')
    second = gzip.compress(b'{"eventID":"2"}]}')
    assert [e["eventID"] for e in events_in(first + second + b"\x00" * 8)] == ["1", "2"]


@pytest.mark.parametrize("data", [
    gzip.compress(b'{"Records":[]}') + b"trailing junk",
    gzip.compress(b'{"Records":[{"eventID":"1"}]}')[:-3],
    zlib.compress(b'{"Records":[]}'),
])
def test_corrupt_or_truncated_gzip_fails_clearly(data):
    with pytest.raises(BadLogFile):
        events_in(data if data[:2] == b"\x1f\x8b" else b"\x1f\x8b" + data)


@pytest.mark.parametrize("number", ["123456789012345678901234567890", "-9223372036854775809",
                                    "18446744073709551616", "1E400", "NaN", "-Infinity", "1.5e-7"])
def test_numbers_are_read_as_the_standard_library_reads_them(number):
    text = '{"Records":[{"eventID":"n","v":' + number + "}]}"
    [event] = events_in(text.encode())
    assert json.dumps(event) == json.dumps(json.loads(text)["Records"][0])


def test_a_lone_surrogate_escape_is_read_as_the_standard_library_reads_it():
    text = '{"Records":[{"eventID":"s","v":"a\\udc80b"}]}'
    assert events_in(text.encode()) == [{"eventID": "s", "v": "a\udc80b"}]


@pytest.mark.parametrize("text,message", [
    ('{"Records":[{"a":1},]}', "not valid JSON"),
    ('{"Records":[{"a":1}', "ends inside"),
    ('{"Records":[{"a":"unterminated', "ends inside an event"),
    ('{"Records":[{"a":1}]', "unexpected content after"),
    ('{"Records":[{"a":1}]}}', "unexpected content after"),
    ('{"Records":["x"]}', "element is not an object"),
    ('{"Records":[{"a":tru}]}', "not valid JSON"),
    ("", "empty"),
    ("   ", "empty"),
    ('{"Records":[{"a":1}],"Records":[{"b":2}]}', "unexpected content after"),
])
def test_malformed_files_fail_with_bad_log_file(text, message):
    with pytest.raises(BadLogFile, match=message):
        events_in(text.encode())


def test_a_big_file_of_another_shape_is_refused_not_parsed_whole():
    text = '{"other": "' + "x" * 5000 + '", "Records": []}'
    with pytest.raises(BadLogFile, match="MAX_EVENT_BYTES"):
        events_in(text.encode(), max_event_bytes=1000)
    assert events_in(text.encode()) == []


def test_settings_carry_the_limits():
    from cloudtrail_es.core.config import Settings

    settings = Settings.from_env({"ES_HOSTNAME": "http://h:9200", "ES_AUTH": "none",
                                  "MAX_EVENT_BYTES": "1000", "MAX_FILE_BYTES": "5000"})
    assert (settings.max_event_bytes, settings.max_file_bytes) == (1000, 5000)
    defaults = Settings(es_url="http://h:9200")
    assert (defaults.max_event_bytes, defaults.max_file_bytes) == (
        decoder.DEFAULT_MAX_EVENT_BYTES, decoder.DEFAULT_MAX_FILE_BYTES)


def test_the_head_of_a_small_oversized_event_is_only_that_event(small_window):
    text = '{"Records":[{"eventID":"1","v":"' + "w" * 60 + '"}]}'
    [trace] = events_in(text.encode(), max_event_bytes=50)
    assert isinstance(trace, OversizedEvent)
    assert trace.head == text[len('{"Records":['):-2] and trace.size == len(trace.head)


_json_values = st.recursive(
    st.none() | st.booleans() | st.text(alphabet="0123456789-: ,[\t") | st.text()
    | st.integers() | st.integers(min_value=10**17, max_value=10**40)
    | st.integers(min_value=-10**40, max_value=-10**17)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                      max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.dictionaries(st.text(max_size=5), _json_values, max_size=5), max_size=4),
       separators=st.sampled_from([(",", ":"), (", ", ": "), (",\n\t", ":\r\n "), (" ,", " :")]))
def test_any_file_reads_as_the_standard_library_reads_it(events, separators):
    """Whole-file (orjson) or streamed, numbers of any length in any spacing come out as json's."""
    text = records_file(events, separators)
    expected = json.loads(text)["Records"]
    assert json.dumps(events_in(text)) == json.dumps(expected)
    assert json.dumps(events_in(gzip.compress(text))) == json.dumps(expected)
