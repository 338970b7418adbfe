"""The fields a document brings that its index lacks: found whole, typed as the templates type them."""
import time
from typing import Any

from cloudtrail_strategies import events
from hypothesis import HealthCheck, given, settings

from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.documents import transform
from cloudtrail_es.write import indexes
from cloudtrail_es.write.fields import Fields, KnownFields, scan

STATIC = indexes.mapping()["properties"]


def dynamic_paths(document: dict[str, Any]) -> set[str]:
    """Every field path of ``document`` the static mapping does not hold (the reference)."""
    paths = set()
    for name, value in document.items():
        if name in STATIC:
            continue
        if isinstance(value, dict):
            paths.add(name)
            paths.update(f"{name}.{leaf}" for leaf in value)
        else:
            paths.add(name)
    return paths


def paths_of(fields: Fields) -> set[str]:
    paths = set(fields)
    for name, leaves in fields.items():
        paths.update(f"{name}.{leaf}" for leaf in leaves or ())
    return paths


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(events, events)
def test_a_scan_finds_every_new_field_and_nothing_twice(first, second):
    known = KnownFields(STATIC)
    documents = [transform.document_for(first), transform.document_for(second)]
    found: Fields = {}
    scan(documents[0], known.of("i"), found)
    assert paths_of(found) == dynamic_paths(documents[0])
    known.add("i", found)
    again: Fields = {}
    scan(documents[0], known.of("i"), again)
    assert again == {}
    rest: Fields = {}
    scan(documents[1], known.of("i"), rest)
    # (an object already known comes back only as the holder of its new leaves)
    assert paths_of(rest) - set(found) == dynamic_paths(documents[1]) - paths_of(found)
    assert known.missing("i", rest) == rest


def test_fields_are_typed_as_the_dynamic_templates_type_them():
    properties = indexes.dynamic_properties({
        "resources_flattened": {"ARN", "type_raw"}, "resources_raw": None, "newTopLevel": None,
        "odd_flattened": None})
    assert properties == {
        "resources_flattened": {"properties": {"ARN": indexes.KEYWORD_FILTER_ONLY,
                                               "type_raw": indexes.KEYWORD_FILTER_ONLY}},
        "resources_raw": indexes.TEXT_SOURCE_ONLY,
        "newTopLevel": indexes.KEYWORD,
        "odd_flattened": indexes.KEYWORD,
    }
    templates = {next(iter(t)): next(iter(t.values())) for t in indexes.mapping()["dynamic_templates"]}
    assert templates["flattened_leaves"]["mapping"] is indexes.KEYWORD_FILTER_ONLY
    assert templates["raw_json"]["mapping"] is indexes.TEXT_SOURCE_ONLY
    assert templates["other_strings"]["mapping"] is indexes.KEYWORD


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"eventVersion": "1.08", "eventTime": "2024-01-15T10:00:00Z", "eventID": event_id,
            "eventName": "Call", **fields}


def test_one_mapping_update_per_index_per_chunk_the_first_in_the_creation_body(fakes):
    records = [event(f"e{n}", requestParameters={f"key{n % 7}": n}, **{f"top{n % 3}": "x"})
               for n in range(40)]
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource({
        fakes.log_key("a"): fakes.trail_file(records[:20]),
        fakes.log_key("b"): fakes.trail_file(records[20:])}), cluster, bulk_max_docs=5)

    processor.process_files([ObjectRef("bucket", fakes.log_key(name)) for name in "ab"],
                            time.monotonic() + 60)

    creation, *updates = cluster.mappings
    assert creation[0] == "/ct-2024-01"
    created = creation[1]["mappings"]["properties"]
    assert set(created["requestParameters_flattened"]["properties"]) >= {"key0", "key4"}
    assert "top0" in created
    declared: set[str] = set(created)
    for path, body in updates:
        assert path == "/ct-2024-01/_mapping"
        assert body["properties"]
        declared |= paths_of({name: set(value.get("properties", ())) or None
                              for name, value in body["properties"].items()})
    assert len(updates) <= len(cluster.bulk) - 1
    assert {f"top{n}" for n in range(3)} <= declared
    assert {f"requestParameters_flattened.key{n}" for n in range(7)} <= declared | {
        f"requestParameters_flattened.{leaf}" for leaf in created["requestParameters_flattened"]["properties"]}
    # Nothing declared twice.
    named = [name for _, body in updates for name in body["properties"]
             if "properties" not in body["properties"][name]]
    assert len(named) == len(set(named))
