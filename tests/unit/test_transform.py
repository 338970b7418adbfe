import json
from pathlib import Path

import pytest

from cloudtrail_es.documents import transform
from cloudtrail_es.documents.transform import document_for, field_name, flatten_leaves

GOLDEN = Path(__file__).resolve().parents[1] / "events" / "transform"
CASES = sorted(p.name.removesuffix(".input.json") for p in GOLDEN.glob("*.input.json"))


@pytest.mark.parametrize("case", CASES)
def test_document_matches_golden_file(case):
    event = json.loads((GOLDEN / f"{case}.input.json").read_text())
    expected = json.loads((GOLDEN / f"{case}.expected.json").read_text())
    assert document_for(event) == expected


def test_golden_cases_exist():
    assert {"run_instances", "adversarial"} <= set(CASES)


def test_flatten_keeps_distinct_values_in_first_seen_order_as_json_strings():
    value = {"a": [3, {"a": True}, 3, None, "x"], "b": {"c": 1.5, "d": None}}
    assert flatten_leaves(value) == {"a": ["3", "true", "x"], "c": ["1.5"]}


def test_flatten_caps_the_number_of_distinct_keys():
    wide = {f"k{i}": i for i in range(transform.MAX_FLATTENED_KEYS + 50)}
    flattened = flatten_leaves(wide)
    assert len(flattened) == transform.MAX_FLATTENED_KEYS
    assert "k0" in flattened and f"k{transform.MAX_FLATTENED_KEYS}" not in flattened


@pytest.mark.parametrize("key,name", [
    ("instanceId", "instanceId"),
    ("a.b", "a%2Eb"),
    ("a%2Eb", "a%252Eb"),
    ("", "%"),
    ("  ", "%20%20"),
    ("%", "%25"),
])
def test_field_name_escapes_dots_percent_and_blank_names(key, name):
    assert field_name(key) == name


def test_field_names_are_one_to_one():
    keys = ["a.b", "a%2Eb", "a_b", "", " ", "%", "%20", ".", "%2E"]
    assert len({field_name(k) for k in keys}) == len(keys)


def test_top_level_names_never_start_with_underscore():
    document = document_for({"eventID": "x", "_id": "1", "_source": {"a": 1}})
    assert all(not name.startswith("_") for name in document)


def test_document_id_is_event_id_or_a_stable_digest():
    assert transform.document_id({"eventID": "abc"}) == "abc"
    event = {"eventName": "X", "eventTime": "2024-01-01T00:00:00Z"}
    assert transform.document_id(event) == transform.document_id(dict(event))
    assert transform.document_id(event).startswith("sha256-")
    assert transform.document_id(event) != transform.document_id({**event, "eventName": "Y"})


def _leaf_values(document):
    for value in document.values():
        if isinstance(value, dict):
            yield from _leaf_values(value)
        elif isinstance(value, list):
            yield from value
        else:
            yield value


def test_corpus_documents_have_only_string_leaves_and_safe_names(corpus_dir):
    import gzip

    files = sorted((corpus_dir / "AWSLogs").rglob("*.json.gz"))
    assert files
    for path in files:
        for event in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            document = document_for(event)
            assert all(isinstance(v, str) for v in _leaf_values(document)), event["eventID"]
            for name, value in document.items():
                if name.endswith(transform.FLATTENED_SUFFIX):
                    assert all(k and "." not in k for k in value), (event["eventID"], name)


@pytest.mark.parametrize("key", ["requestParameters", "userIdentity", "resources"])
@pytest.mark.parametrize("odd", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_and_null_never_share_a_document(key, odd):
    """orjson spells NaN and the infinities as ``null``: the cache of top-level objects, keyed
    by orjson's text, must not give one of ``{"x": NaN}`` / ``{"x": null}`` the other's fields,
    in either order (the standard library's decoder reads NaN where orjson refuses the file)."""
    from cloudtrail_es.read.decoder import events_in

    value = '[{"x": %s, "accessKeyId": %s}]' if key == "resources" else '{"x": %s, "accessKeyId": %s}'
    records = [f'{{"eventID": "{n}", "{key}": {value % (literal, literal)}}}'
               for n, literal in enumerate((odd, "null"))]
    apart = {}
    for record in records:
        transform._PARTS.clear()
        [event] = events_in(f'{{"Records": [{record}]}}'.encode())
        apart[event["eventID"]] = json.dumps(document_for(event))
    for order in (records, records[::-1]):
        transform._PARTS.clear()
        together = {event["eventID"]: json.dumps(document_for(event))
                    for event in events_in(f'{{"Records": [{",".join(order)}]}}'.encode())}
        assert together == apart
    assert odd in apart["0"] and odd not in apart["1"]
